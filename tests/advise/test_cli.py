"""``transferlab advise`` end to end through the installed script (a subprocess): a tiny MLP source on digits
0-4, transferred to digits 5-9 (an npz the fixture writes)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any
from pathlib import Path

import pytest

#: The top-level keys of the JSON (documented in docs/advise.md).
KEYS = {"model", "data", "target_size", "n_classes", "n_blocks", "block_names", "decision", "k_star", "k_star_set",
        "errors_at_n", "gain", "effective", "predictors", "predictor_notes", "fits", "cells", "sweep", "error_floor",
        "notes", "verdict"}


def test_advise_end_to_end(tiny_pair: Path, advise_cli: Callable[..., Any], tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "advice.json", tmp_path / "advice.html"
    proc = advise_cli("--model", "module:tiny_source:build", "--data", f"npz:{tiny_pair / 'target.npz'}",
                      "--target-size", 60, "--budget", 0.3, "--json", out_json, "--html", out_html, "--seed", 1)
    assert proc.returncode == 0, proc.stderr
    assert "verdict:" in proc.stdout and "[1/" in proc.stderr  # the verdict on stdout, progress on stderr
    advice = json.loads(out_json.read_text())
    assert set(advice) == KEYS
    assert advice["target_size"] == 60 and advice["n_classes"] == 5 and advice["n_blocks"] == 2
    assert advice["block_names"] == ["0+1+2", "3+4"]
    assert advice["decision"] in ("transfer", "scratch", "either")

    # errors at N: fitted test error rates with standard errors, one per k and scratch
    at_n = advice["errors_at_n"]
    assert set(at_n) == {"scratch", "k=0", "k=1", "k=2"}
    for value in at_n.values():
        assert 0 < value["error"] <= 1 and value["se"] >= 0
    # k* is the smallest fitted error; the set is every k within 2 SE of the difference (the library's rule,
    # recomputed from the JSON's own numbers)
    errors = {int(name[2:]): (v["error"], v["se"]) for name, v in at_n.items() if name != "scratch"}
    best = advice["k_star"]
    assert errors[best][0] == min(e for e, _ in errors.values())
    assert advice["k_star_set"] == [k for k in sorted(errors)
                                    if errors[k][0] - errors[best][0] <= 2 * math.hypot(errors[k][1], errors[best][1])]
    gain = advice["gain"]
    # the gain is a difference of two JSON floats: equal to 1e-12 (float64 rounding of one subtraction)
    assert gain["estimate"] == pytest.approx(at_n["scratch"]["error"] - at_n[f"k={best}"]["error"], abs=1e-12)
    low, high = gain["ci95"]
    assert low < gain["estimate"] < high
    expected = "transfer" if low > 0 else "scratch" if high < 0 else "either"
    assert advice["decision"] == expected

    eff = advice["effective"]
    assert eff["status"] in ("ok", "beyond_measured_range", "below_measured_range")
    assert eff["transferred"] == pytest.approx(eff["effective"] - 60, abs=1e-9)
    sweep = advice["sweep"]
    assert max(sweep["sizes"]) == 60 and sweep["sizes"] == sorted(sweep["sizes"]) and len(sweep["sizes"]) >= 3
    assert eff["measured_range"] == [min(sweep["scratch_sizes"]), max(sweep["scratch_sizes"])]
    assert sweep["seeds"] == 2 and sweep["max_steps"] >= 50
    assert len(advice["cells"]) == sweep["cells"] == len(sweep["sizes"]) * 3 + len(sweep["scratch_sizes"])
    for cell in advice["cells"]:
        assert cell["status"] == "ok" and len(cell["errors"]) == 2 and all(0 <= e <= 1 for e in cell["errors"])
    # the feature-based predictors and, since the source has a classifier, LEEP and NCE: all finite numbers
    for name in ("LogME", "H-score", "NLEEP", "GBC", "TransRate", "LEEP", "NCE"):
        assert math.isfinite(advice["predictors"][name]), (name, advice["predictor_notes"])

    page = out_html.read_text()
    assert page.count("data:image/png;base64,") == 2 and "verdict:" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_fixed_steps_give_the_same_advice_twice(tiny_pair: Path, advise_cli: Callable[..., Any], tmp_path: Path) -> None:
    """--steps pins the steps per run: no timed pilots, no budget, and two runs give the same cells (same seeds
    and steps; compared to 1e-12, far below any training effect, so only float rounding may differ)."""
    runs = []
    for i in range(2):
        out = tmp_path / f"advice{i}.json"
        proc = advise_cli("--model", "module:tiny_source:build", "--data", f"npz:{tiny_pair / 'target.npz'}",
                          "--target-size", 40, "--steps", 50, "--json", out, "--seed", 2)
        assert proc.returncode == 0, proc.stderr
        assert "steps given" in proc.stderr and "pilot:" not in proc.stderr
        runs.append(json.loads(out.read_text()))
    first, second = runs
    assert first["sweep"]["max_steps"] == 50
    assert first["sweep"]["budget_minutes"] is None and first["sweep"]["pilot_seconds_per_step"] is None
    assert first["decision"] == second["decision"] and first["k_star"] == second["k_star"]
    assert len(first["cells"]) == len(second["cells"])
    for a, b in zip(first["cells"], second["cells"], strict=True):
        assert a["errors"] == pytest.approx(b["errors"], abs=1e-12)
