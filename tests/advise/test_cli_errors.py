"""``transferlab advise`` on bad input, through the installed script (a subprocess): one line ``error: ...`` naming
the problem, exit code 2, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def single_class_npz(tmp_path_factory: pytest.TempPathFactory, tiny_pair: Path) -> Path:
    import numpy as np

    with np.load(tiny_pair / "target.npz") as f:
        arrays = dict(f)
    path = tmp_path_factory.mktemp("single") / "one_class.npz"
    np.savez(path, x_train=arrays["x_train"], y_train=0 * arrays["y_train"], x_test=arrays["x_test"],
             y_test=0 * arrays["y_test"])
    return path


BAD_INPUT = [  # (model, data, extra args, fragment of the one-line error)
    ("bogus", "target", [], "source must be pretrained:<name>"),
    ("pretrained:resnet9000", "target", [], "resnet9000"),
    ("module:tiny_source:bad_blocks", "target", [], "no submodule 'hidden7'"),
    ("module:tiny_source:build", "target", ["--target-size", 10], "N >= 20"),
    ("module:tiny_source:build", "target", ["--target-size", 5000], "too little training data for the sweep"),
    ("module:tiny_source:build", "single", [], "single class"),
    ("module:tiny_source:build", "garbage", [], "not a readable .npz file"),
    ("module:tiny_source:build", "missing", [], "does not exist"),
    ("module:tiny_source:build", "target", ["--steps", 10], "steps"),
]


@pytest.mark.parametrize(("model", "data", "extra", "fragment"), BAD_INPUT,
                         ids=["unknown-model", "unknown-pretrained", "block-names", "target-too-small",
                              "too-little-data", "single-class", "unreadable-file", "missing-file", "too-few-steps"])
def test_advise_bad_input(tiny_pair: Path, single_class_npz: Path, advise_cli: Callable[..., Any], tmp_path: Path,
                          model: str, data: str, extra: list[object], fragment: str) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not an array file\n")
    path = {"target": tiny_pair / "target.npz", "single": single_class_npz, "garbage": garbage,
            "missing": tmp_path / "nowhere.npz"}[data]
    proc = advise_cli("--model", model, "--data", f"npz:{path}", "--budget", 0.2, *extra)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
