"""Tidy CSV reading/writing, bad-input messages, the synthetic generator and the CLI commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from transferlab.cli import main
from transferlab.errors import DataError
from transferlab.scaling import (
    LossTable,
    SyntheticSurface,
    TransferLaw,
    read_losses_csv,
    synthetic_losses,
    write_losses_csv,
)
from transferlab.scaling.synthetic import KAPLAN_WEBTEXT2_SEPARATE as KAPLAN

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "synthetic_transfer_losses.csv"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_synthetic_surface_layout_and_reproducibility():
    surface = SyntheticSurface(model_sizes=(1e6, 1e8), scratch_data_sizes=(1e4, 1e6, 1e8),
                               finetune_data_sizes=(1e4, 1e5), noise=0.0)
    table = synthetic_losses(surface)
    assert len(table) == 2 * (3 + 2)
    scratch, fine = table.subset("scratch"), table.subset("finetune")
    np.testing.assert_allclose(scratch.loss, KAPLAN.loss(scratch.model_size, scratch.data_size), rtol=1e-15)
    law = surface.law
    np.testing.assert_allclose(
        fine.loss, KAPLAN.loss(fine.model_size, fine.data_size + law.transferred_data(fine.data_size, fine.model_size)),
        rtol=1e-15)
    assert np.all(fine.loss < KAPLAN.loss(fine.model_size, fine.data_size))  # transfer helps
    noisy = SyntheticSurface(noise=0.002)
    a, b, c = synthetic_losses(noisy, seed=1), synthetic_losses(noisy, seed=1), synthetic_losses(noisy, seed=2)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert not np.array_equal(a.loss, c.loss)
    ratio = np.log(a.loss / synthetic_losses(SyntheticSurface(noise=0.0)).loss)
    assert ratio.std() == pytest.approx(0.002, rel=0.1)


def test_csv_round_trip_is_exact(tmp_path):
    table = synthetic_losses(SyntheticSurface(noise=0.003), seed=4)
    back = read_losses_csv(write_losses_csv(table, tmp_path / "t.csv"))
    for name in ("model_size", "data_size", "loss"):
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    np.testing.assert_array_equal(back.regime, table.regime)


def test_csv_columns_in_any_order_extra_columns_and_blank_lines(tmp_path):
    path = _write(tmp_path / "t.csv", "loss,seed,regime,data_size,model_size\n3.5,0,scratch,1e4,1e6\n\n3.1,0,FineTune,1e4,1e6\n")
    table = read_losses_csv(path)
    assert table.regime.tolist() == ["scratch", "finetune"] and table.loss.tolist() == [3.5, 3.1]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("model_size,data_size,loss\n1e6,1e4,3.0\n", r"missing column\(s\) 'regime'; found 'model_size', 'data_size', 'loss'"),
        ("model_size,data_size,regime,loss\n1e6,abc,scratch,3.0\n", r"line 2, column 'data_size' \(model size 1e6\): 'abc' is not a number"),
        ("model_size,data_size,regime,loss\n1e6,1e4,scratch,3.0\n1e6,-5,scratch,3.0\n", r"column 'data_size' must be finite and > 0: line 3 has -5.0 \(model size 1e\+06\)"),
        ("model_size,data_size,regime,loss\n1e6,0,scratch,3.0\n", r"column 'data_size' must be finite and > 0: line 2"),
        ("model_size,data_size,regime,loss\n1e6,1e4,scratch,3.0\n2e7,1e5,finetune,nan\n", r"column 'loss' must be finite and > 0: line 3 \(model size 2e\+07, data size 100000, regime finetune\) has nan"),
        ("model_size,data_size,regime,loss\n1e6,1e4,pretrain,3.0\n", r"column 'regime' must be 'scratch' or 'finetune': line 2 \(model size 1e\+06\) has 'pretrain'"),
        ("model_size,data_size,regime,loss\n1e6,1e4,scratch,\n", r"line 2: empty value in column\(s\) loss"),
        ("model_size,data_size,regime,loss\n", r"no data rows"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        read_losses_csv(_write(tmp_path / "bad.csv", text))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read loss table"):
        read_losses_csv(tmp_path / "nope.csv")


def test_loss_table_from_arrays_names_the_model_size():
    with pytest.raises(DataError, match=r"column 'loss' must be finite and > 0: row 1 \(model size 3e\+06"):
        LossTable.from_columns([1e6, 3e6], [1e4, 1e4], ["scratch", "scratch"], [3.0, np.inf])
    with pytest.raises(DataError, match="different lengths"):
        LossTable.from_columns([1e6], [1e4, 1e5], ["scratch"], [3.0])


def test_cli_synth_then_fit_json(tmp_path, capsys):
    csv_path = tmp_path / "losses.csv"
    assert main(["synth-transfer", str(csv_path), "--seed", "3", "--noise", "0.002", "--n-sizes", "5"]) == 0
    assert "wrote 190 runs" in capsys.readouterr().out
    assert main(["fit-transfer", str(csv_path), "--json", "--n-boot", "100", "--resample", "points"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["alpha"] - 0.18) < 0.02 and abs(out["beta"] - 0.38) < 0.02
    assert abs(out["log10_k"] - np.log10(1.9e4)) < 0.15
    assert out["status"] == "converged" and out["resample"] == "points" and out["n_boot"] == 100
    lo, hi = out["intervals"]["alpha"]
    assert lo < out["alpha"] < hi
    assert out["point_status_counts"]["ok"] == out["n_points"]
    assert out["scratch_surface"]["status"] in {"converged", "hit_bound"}


def test_cli_example_report_and_figures(tmp_path, capsys):
    """The committed example input: text summary, HTML report with the figures, PNG + SVG files."""
    report, figures = tmp_path / "report.html", tmp_path / "figs"
    code = main(["fit-transfer", str(EXAMPLE), "-o", str(report), "--figures", str(figures), "--n-boot", "200"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "alpha" in out and "beta" in out and "status   = converged" in out
    html = report.read_text(encoding="utf-8")
    for name in ("scaling_loss_curves", "scaling_transferred_data", "scaling_fraction_from_transfer"):
        assert f'data-name="{name}"' in html
        assert (figures / f"{name}.png").stat().st_size > 0 and (figures / f"{name}.svg").stat().st_size > 0
    assert "http://" not in html.replace("http://www.w3.org", "")


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    bad = _write(tmp_path / "bad.csv", "model_size,data_size,regime\n1e6,1e4,scratch\n")
    assert main(["fit-transfer", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing column(s) 'loss'" in err and "\n" not in err
    table = synthetic_losses(SyntheticSurface(model_sizes=(1e6,), noise=0.001))
    one = write_losses_csv(table, tmp_path / "one.csv")
    assert main(["fit-transfer", str(one), "--n-boot", "0"]) == 2
    assert "too few model sizes" in capsys.readouterr().err
    assert main(["fit-transfer", str(one), "--method", "ols"]) == 2
    assert "--method must be one of" in capsys.readouterr().err


def test_cli_reports_rising_scratch_curve_by_model_size(tmp_path, capsys):
    table = synthetic_losses(SyntheticSurface(model_sizes=(1e6, 1e7, 1e8), noise=0.0))
    loss = table.loss.copy()
    idx = np.flatnonzero((table.model_size == 1e7) & (table.regime == "scratch"))
    loss[idx[-1]] = loss[idx[0]]  # largest-D run as bad as the smallest
    broken = LossTable.from_columns(table.model_size, table.data_size, table.regime, loss)
    path = write_losses_csv(broken, tmp_path / "rise.csv")
    assert main(["fit-transfer", str(path), "--n-boot", "0"]) == 2
    assert "scratch loss of model size 1e+07 rises with data" in capsys.readouterr().err


def test_cli_prints_warnings_for_censored_points(tmp_path, capsys):
    # a surface whose scratch grid stops early: big-model effective data lies beyond it
    surface = SyntheticSurface(scratch_data_sizes=tuple(np.logspace(3, 8, 16)), noise=0.0,
                               law=TransferLaw(1.9e4, 0.18, 0.38))
    path = write_losses_csv(synthetic_losses(surface), tmp_path / "short.csv")
    assert main(["fit-transfer", str(path), "--n-boot", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "censored" in err and "N=1e+09" in err


def test_csv_with_a_byte_order_mark_reads_like_plain_utf8(tmp_path):
    """Spreadsheets often save UTF-8 with a BOM; the first column name must still be found."""
    plain = write_losses_csv(synthetic_losses(SyntheticSurface(), seed=1), tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    a, b = read_losses_csv(plain), read_losses_csv(bom)
    assert np.array_equal(a.model_size, b.model_size) and np.array_equal(a.loss, b.loss)


README_TABLE = {  # README.md, "Scaling laws for transfer": method -> parameter -> (estimate, lower, upper)
    "direct": {"log10_k": (4.246, 4.158, 4.328), "alpha": (0.1836, 0.1784, 0.1878), "beta": (0.3826, 0.3742, 0.3934)},
    "huber": {"log10_k": (4.275, 4.173, 4.342), "alpha": (0.1837, 0.1779, 0.1904), "beta": (0.3788, 0.3722, 0.3883)},
    "fit_the_fits": {"log10_k": (4.249, 4.167, 4.328), "alpha": (0.1839, 0.1784, 0.1890),
                     "beta": (0.3819, 0.3743, 0.3917)},
}


def _assert_is_the_seed_0_surface(table: LossTable, fresh: LossTable) -> None:
    """Regimes are strings and compare exactly. Grid sizes are decimal literals rounded once to float
    (:func:`log_grid`), so they agree to a few ulp (rtol 1e-15), far below the spacing of the grid; losses come from numpy's ``pow``/``exp``, which CPUs' vector math libraries round
    differently in the last ulp or two: compared to rtol 1e-12."""
    np.testing.assert_array_equal(table.regime, fresh.regime)
    for name in ("model_size", "data_size"):
        np.testing.assert_allclose(getattr(table, name), getattr(fresh, name), rtol=1e-15, atol=0, err_msg=name)
    np.testing.assert_allclose(table.loss, fresh.loss, rtol=1e-12, atol=0)


def test_log_grid_is_exact_and_machine_independent():
    """10**6.5 is 3162277.660168379516...; the nearest double is 3162277.6601683795, which numpy's
    logspace misses on some CPUs. log_grid returns it, and every grid value is the double nearest
    to its power of ten."""
    from decimal import Decimal, localcontext

    from transferlab.scaling.synthetic import log_grid

    grid = log_grid(1e5, 1e9, 9)
    assert len(grid) == 9 and repr(grid[3]) == "3162277.6601683795"
    with localcontext(prec=50):
        for value, exponent in zip(log_grid(1e3, 1e11, 25), np.linspace(3, 11, 25), strict=True):
            exact = Decimal(10) ** Decimal(float(exponent))
            assert abs(Decimal(value) - exact) <= Decimal(math.ulp(value)) / 2  # correctly rounded


def test_readme_quick_start_regenerates_the_committed_example(tmp_path, capsys):
    """The README's first scaling command writes synth.csv equal to the committed example."""
    out = tmp_path / "synth.csv"
    assert main(["synth-transfer", str(out), "--seed", "0", "--noise", "0.002"]) == 0
    _assert_is_the_seed_0_surface(read_losses_csv(out), read_losses_csv(EXAMPLE))
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "transferlab synth-transfer synth.csv --seed 0 --noise 0.002" in readme
    assert "transferlab synth-transfer examples/" not in readme  # never over the committed file


def test_readme_recovery_table_reproduces_from_the_committed_example():
    """The committed example is the seed-0 synthetic surface, and fitting it with the documented
    settings (1000 model-size resamples, seed 0) gives the README's table to its printed digits."""
    from transferlab.scaling import analyze_transfer

    table = read_losses_csv(EXAMPLE)
    _assert_is_the_seed_0_surface(table, synthetic_losses(SyntheticSurface(noise=0.002), seed=0))
    for method, params in README_TABLE.items():
        analysis = analyze_transfer(table, method=method, n_boot=1000, seed=0)
        assert analysis.effective.counts()["ok"] == 113 and analysis.effective.counts()["high_data"] == 4
        for name, (estimate, lo, hi) in params.items():
            digits = 5e-4 if name == "log10_k" else 5e-5  # half a unit of the last printed digit
            assert getattr(analysis.fit, name) == pytest.approx(estimate, abs=digits), (method, name)
            assert analysis.fit.intervals[name] == pytest.approx((lo, hi), abs=digits), (method, name)
