"""The ``transferability`` kind end to end through the installed CLI on a tiny zoo (MLPs and a CNN trained on
digits 0-4, the 8 x 8 images, ranked on digits 5-9), with the advisor validated on one pair; and bad specs:
one line naming the problem, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("transferlab")

TINY = """
experiment = "transferability"
seed = 0
name = "{name}"

[params]
target = "digits[5,6,7,8,9]"
instances = 2
test_size = 200
source_size = 300
reference_size = 300
divergence_size = 100
val_size = 50
max_steps = 30
patience_steps = 20
advise_steps = 50

[grid]
source = {sources}
n = [50]
protocol = {protocols}
"""


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cwd / "cache")}
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _spec(path: Path, name: str, sources: list[str], protocols: list[str]) -> Path:
    path.write_text(TINY.format(name=name, sources=json.dumps(sources), protocols=json.dumps(protocols)))
    return path


def test_tiny_zoo_end_to_end(tmp_path: Path) -> None:
    sources = ["mlp:digits[0,1,2,3,4]", "mlp-16:digits[0,1,2,3,4]", "cnn-4:digits[0,1,2,3,4]"]
    main = _spec(tmp_path / "tiny.toml", "tiny", sources,
                 ["scores", "linear_probe", "freeze_sweep", "finetune", "scratch"])
    advise = _spec(tmp_path / "tiny-advise.toml", "tiny-advise", sources[:1], ["advise"])
    for spec in (main, advise):
        done = _cli("run", spec, "--store", "tiny.db", "--executor", "serial", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    done = _cli("report", "tiny.db", "-o", "report.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    html = (tmp_path / "report.html").read_text()
    for fragment in ("predictors (all sources, feature predictors)", "advise against the measured sweep (summary)",
                     "transferability_scatter_finetune", "transferability_stability_all"):
        assert fragment in html
    from transferlab.sweep import load_table

    experiment, table = load_table(tmp_path / "tiny.db")
    results = experiment.analyze(table)
    panel = next(p for p in results.data["panels"] if p["name"].startswith("all"))
    assert panel["report"] is not None and panel["variations"] == 3 * 2  # 3 protocols x 2 seeds at one n
    for row in panel["table"]:
        for protocol in ("linear_probe", "freeze_best", "finetune"):
            tau = row[f"tau_w {protocol}"]
            assert tau is None or -1.0 <= tau <= 1.0
    (validation,) = results.data["validation"]
    assert validation["L"] == 3 and validation["advise decision"] in ("transfer", "scratch", "either")
    assert validation["regret advise"] >= 0.0 and validation["regret probe"] >= 0.0
    from transferlab.experiments.transferability import write_tables

    written = {p.name for p in write_tables(tmp_path / "tiny.db", tmp_path / "tables")}
    assert "transferability_tables.md" in written
    csv = (tmp_path / "tables" / "transferability_predictors__all_sources__feature_predictors.csv").read_text()
    assert csv.splitlines()[0].startswith("predictor,sources,tau_w linear_probe") and len(csv.splitlines()) == 8


@pytest.mark.parametrize(("sources", "protocols", "fragment"), [
    (["resnet:mnist"], ["scores"], "source must be pretrained:<name> or <cnn|mlp>"),
    (["cnn-0:digits"], ["scores"], "the width must be >= 1"),
    (["cnn:nosuchdata"], ["scores"], "nosuchdata"),
    (["cnn-4:digits[0,1,2,3,4]"], ["advise"], "needs a source that transferlab advise builds"),
    (["mlp:digits[0,1,2,3,4]:coarse"], ["scores"], "needs a label hierarchy"),
], ids=["bad-source", "zero-width", "unknown-data", "advise-variant", "coarse-without-hierarchy"])
def test_bad_spec_is_one_line_exit_2(tmp_path: Path, sources: list[str], protocols: list[str], fragment: str) -> None:
    spec = _spec(tmp_path / "bad.toml", "bad", sources, protocols)
    done = _cli("run", spec, "--store", "bad.db", "--executor", "serial", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr
