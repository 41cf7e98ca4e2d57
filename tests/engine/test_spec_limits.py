"""Specs that used to get through: grids too large to list, NaN and infinity spelled as strings,
booleans and floats where integers belong. Each is one line naming the key, exit 2, nothing
written, and refused before anything is expanded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferlab.errors import ConfigError
from transferlab.sweep import expand_cells, load_spec, spec_from_dict
from transferlab.sweep.spec import DEFAULT_MAX_CELLS

from .conftest import write_spec

SCRIPT = Path(sys.executable).with_name("transferlab")


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


THOUSAND = "[" + ", ".join(str(i) for i in range(1000)) + "]"
HUGE = [  # (spec body, fragment of the one-line error)
    (f'experiment = "toy"\n[grid]\nmu = {THOUSAND}\nwork = {THOUSAND}\nsleep = {THOUSAND}\n',
     "expands to 1,000,000,000 cells (1000 mu x 1000 work x 1000 sleep x 1 replicates), more than max_cells"),
    ('experiment = "toy"\n[grid]\nmu = {linspace = [0, 1, 1000000000]}\n', "expands to 1,000,000,000 cells"),
    ('experiment = "toy"\n[grid]\nmu = {range = [0, 1000000000000, 1]}\n', "expands to 1,000,000,000,000 cells"),
    ('experiment = "toy"\nreplicates = 1000000000\n', "(1 point x 1000000000 replicates)"),
    ('experiment = "toy"\nreplicates = 1e9\n', "replicates: Input should be a valid integer"),
]


@pytest.mark.parametrize(("body", "fragment"), HUGE, ids=["3 axes of 1000", "linspace 1e9", "range 1e12",
                                                         "replicates 1e9 int", "replicates 1e9 float"])
def test_huge_specs_are_refused_at_once_without_a_store(tmp_path, body, fragment):
    spec = write_spec(tmp_path, body)
    started = time.monotonic()
    proc = run_cli("run", spec, "--store", tmp_path / "x.db", "--executor", "serial", cwd=tmp_path)
    assert time.monotonic() - started < 30  # a refusal, not an expansion (it took 17-88 s and then died)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.db").exists()


def test_the_limit_is_counted_before_expanding_and_can_be_raised(tmp_path):
    raw = {"experiment": "toy", "grid": {"mu": {"linspace": [0, 1, 10**12]}}}
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="more than max_cells = 100,000"):
        spec_from_dict(raw)
    assert time.perf_counter() - started < 1.0  # counted, not listed
    assert DEFAULT_MAX_CELLS == 100_000
    small = {"experiment": "toy", "grid": {"mu": {"range": [0, 30, 1]}}, "replicates": 2}
    assert spec_from_dict(small).cell_count() == 60
    with pytest.raises(ConfigError, match="60 cells .* more than max_cells = 50"):
        spec_from_dict({**small, "run": {"max_cells": 50}})
    assert len(expand_cells(spec_from_dict({**small, "run": {"max_cells": 60}}))) == 60


def test_max_cells_flag_overrides_the_limit(tmp_path):
    spec = write_spec(tmp_path, 'experiment = "toy"\n[params]\nn = 4\n[grid]\nmu = {range = [0, 12, 1]}\n')
    refused = run_cli("run", spec, "--store", tmp_path / "s.db", "--executor", "serial", "--max-cells", "11",
                      cwd=tmp_path)
    assert refused.returncode == 2 and "12 cells" in refused.stderr and "--max-cells" in refused.stderr
    assert not (tmp_path / "s.db").exists()
    ok = run_cli("run", spec, "--store", tmp_path / "s.db", "--executor", "serial", "--max-cells", "12", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


NON_FINITE_AND_LOOSE = [  # (spec body, --set overrides, fragment)
    ('experiment = "toy"\n[grid]\nmu = ["nan"]\n', [], "toy.toml: grid.mu: non-finite value 'nan' is not allowed"),
    ('experiment = "toy"\n[grid]\nmu = ["inf", 1.0]\n', [], "toy.toml: grid.mu: non-finite value 'inf' is not allowed"),
    ('experiment = "toy"\n[grid]\nmu = [1.0]\n', ["grid.mu=nan"], "grid.mu: non-finite value 'nan' is not allowed"),
    ('experiment = "toy"\n[grid]\nmu = [1.0]\n', ["params.sigma=-inf"], "params.sigma: non-finite value -inf"),
    ('experiment = "toy"\n[params]\nsigma = "1.5"\n', [],
     "params.sigma: expected a number, got the string '1.5' (drop the quotes)"),
    ('experiment = "toy"\n[params]\nn = true\n', [], "toy.toml: params.n: expected a number, got the boolean true"),
    ('experiment = "fate"\n[params]\ninstances = true\n[grid]\ntheta = [0.5]\ngamma = [1.5]\n', [],
     "params.instances: expected a number, got the boolean true"),
    ('experiment = "fate"\n[params]\ninit_scale = "inf"\n[grid]\ntheta = [0.5]\ngamma = [1.5]\n', [],
     "params.init_scale: non-finite value 'inf' is not allowed"),
    ('experiment = "toy"\nseed = true\n', [], "toy.toml: seed: Input should be a valid integer"),
    ('experiment = "toy"\n[run]\nbatch_size = true\n', [], "toy.toml: run.batch_size: Input should be a valid integer"),
    ('experiment = "toy"\n[grid]\nmu = {linspace = [0, 1, true]}\n', [], "linspace needs three numbers"),
]


@pytest.mark.parametrize(("body", "overrides", "fragment"), NON_FINITE_AND_LOOSE,
                         ids=[f for *_, f in NON_FINITE_AND_LOOSE])
def test_non_finite_and_loose_values_are_one_line_errors(tmp_path, cli, body, overrides, fragment):
    spec = write_spec(tmp_path, body)
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, _, err = cli("run", spec, "--store", tmp_path / "x.db", "--executor", "serial", *sets)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "x.db").exists()


def test_nan_through_the_real_entry_point(tmp_path):
    """It was a traceback from cell_key (JSON cannot encode NaN)."""
    spec = write_spec(tmp_path, 'experiment = "toy"\n[grid]\nmu = ["nan"]\n')
    proc = run_cli("run", spec, "--store", tmp_path / "x.db", "--executor", "serial", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: toy.toml: grid.mu: non-finite value 'nan' is not allowed\n"
    assert not (tmp_path / "x.db").exists()


def test_numbers_stay_numbers_and_words_stay_words(tmp_path):
    spec = load_spec(write_spec(tmp_path, 'experiment = "toy"\n[params]\nn = 12\nmu = 1\n[grid]\nsigma = [2]\n'))
    (cell,) = expand_cells(spec)
    assert cell.cell.config.n == 12 and isinstance(cell.cell.config.mu, float) and cell.cell.config.sigma == 2.0
    assert load_spec(write_spec(tmp_path, 'experiment = "toy"\n'), overrides=["params.fail=nan"]).params["fail"] == "nan"
