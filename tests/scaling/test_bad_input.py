"""Loss tables and fit options that used to get through: text that is not UTF-8, every row
duplicated, a negative number of bootstrap resamples. One line, exit 2, through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.errors import ConfigError, DataError
from transferlab.scaling import analyze_transfer, read_losses_csv

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "synthetic_transfer_losses.csv"
SCRIPT = Path(sys.executable).with_name("transferlab")


def fit_transfer(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "fit-transfer", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("model_size,data_size,regime,loss,note\n1e5,1e3,scratch,3.5,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9 at offset 61\)"):
        read_losses_csv(latin1)
    proc = fit_transfer(latin1)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not UTF-8 text" in proc.stderr, proc.stderr


def test_duplicated_rows_are_refused(tmp_path):
    """Every row twice used to fit "226 points"; a copy is not a second run, so it is refused."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("\n".join([lines[0], *lines[1:], *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"doubled.csv: line 344 is an exact copy of an earlier one .* "
                                        r"342 copied row\(s\) in all"):
        read_losses_csv(doubled)
    proc = fit_transfer(doubled, "--n-boot", "0")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "exact copy" in proc.stderr, proc.stderr
    once = tmp_path / "once.csv"  # the same (N, D) twice with different losses: two runs, accepted
    once.write_text("\n".join([lines[0], lines[1], lines[1].rsplit(",", 1)[0] + ",10.5"]) + "\n", encoding="utf-8")
    assert len(read_losses_csv(once)) == 2


def test_negative_bootstrap_count_is_refused():
    with pytest.raises(ConfigError, match=r"n_boot must be 0 \(no intervals\) or an integer >= 20; got -5"):
        analyze_transfer(read_losses_csv(EXAMPLE), n_boot=-5)
    proc = fit_transfer(EXAMPLE, "--n-boot", "-5")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "'--n-boot'" in proc.stderr, proc.stderr
