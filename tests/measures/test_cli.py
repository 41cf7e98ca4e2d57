"""The ``transferlab measure`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferlab.cli import main
from transferlab.measures import cka_similarity, list_measures, logme_score


@pytest.fixture
def files(tmp_path, rng):
    x, y = rng.standard_normal((40, 4)), rng.standard_normal((40, 4))
    labels = np.arange(40) % 2
    for name, arr in (("a", x), ("b", y), ("y", labels)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path, x, y, labels


def test_measure_prints_value_and_json(files, capsys):
    path, x, y, labels = files
    assert main(["measure", "cka_linear", str(path / "a.npy"), str(path / "b.npy")]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(cka_similarity(x, y), rel=1e-9)
    assert main(["measure", "logme_score", str(path / "a.npy"), "--labels", str(path / "y.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measure"] == "logme_score" and out["value"] == pytest.approx(logme_score(x, labels), rel=1e-12)
    assert main(["measure", "information_imbalance", str(path / "a.npy"), str(path / "b.npy"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["value"]) == {"x_to_y", "y_to_x"}


def test_measure_list_shows_every_measure_with_invariances(capsys):
    assert main(["measure", "--list"]) == 0
    out = capsys.readouterr().out
    for info in list_measures():
        assert info.name in out
    assert "invariant to:" in out


def test_measure_errors_are_one_line_exit_2(files, capsys):
    path, *_ = files
    assert main(["measure", "nope", str(path / "a.npy")]) == 2
    assert main(["measure", "cka_linear", str(path / "a.npy")]) == 2
    assert main(["measure", "logme_score", str(path / "a.npy")]) == 2
    assert main(["measure", "cka_linear", str(path / "a.npy"), str(path / "missing.npy")]) == 2
    err = capsys.readouterr().err
    assert "unknown measure" in err and "needs --labels" in err and "file not found" in err
