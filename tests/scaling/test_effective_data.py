"""Scratch-curve model, inversion, censoring, D(N) and the low-data filter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.errors import DataError
from transferlab.scaling import (
    LossTable,
    ScalingWarning,
    ScratchCurve,
    fit_scratch_curve,
    measure_effective_data,
)
from transferlab.scaling.synthetic import KAPLAN_WEBTEXT2_SEPARATE as KAPLAN

GRID = np.logspace(3, 11, 25)


def _curve(log_u=-0.5, log_v=-1.0, q=0.7, p=0.4) -> ScratchCurve:
    return ScratchCurve(model_size=1e6, l_ref=3.0, d_ref=1e6, log_u=log_u, log_v=log_v, q=q, p=p,
                        d_min=1e3, d_max=1e10, rms_log_residual=0.0, n_points=10, status="converged")


@settings(max_examples=40, deadline=None)
@given(
    log_u=st.floats(-3, 2), log_v=st.floats(-3, 2), q=st.floats(0.05, 3), p=st.floats(0.05, 3),
    log_d=st.lists(st.floats(0, 12), min_size=2, max_size=8),
)
def test_model_is_decreasing_and_inversion_is_its_inverse(log_u, log_v, q, p, log_d):
    curve = _curve(log_u, log_v, q, p)
    d = np.sort(10.0 ** np.asarray(log_d))
    loss = curve.loss(d)
    assert np.all(np.diff(loss) <= 0) and np.all(loss >= curve.plateau)
    back = curve.data_for_loss(loss)
    # where the curve is numerically distinguishable from its plateau the round trip is exact
    informative = (loss / curve.plateau - 1) > 1e-9
    np.testing.assert_allclose(back[informative], d[informative], rtol=1e-5)


def test_inversion_is_monotone_and_infinite_at_the_plateau():
    curve = _curve()
    losses = np.linspace(curve.plateau * 0.9, curve.loss(1e3), 200)
    d = curve.data_for_loss(losses)
    reachable = losses > curve.plateau
    assert np.all(np.isinf(d[~reachable]))
    assert np.all(np.diff(d[reachable]) < 0)


def test_noise_free_kaplan_curve_is_recovered_to_machine_precision():
    for n in (1e5, 1e7, 1e9):
        curve = fit_scratch_curve(GRID, KAPLAN.loss(n, GRID), model_size=n)
        assert curve.status == "converged"
        # the Kaplan slice is the q = 1, p = a_D member of the family
        assert curve.q == pytest.approx(1.0, rel=1e-8) and curve.p == pytest.approx(KAPLAN.alpha_d, rel=1e-8)
        assert curve.plateau == pytest.approx(float(KAPLAN.infinite_data_loss(n)), rel=1e-9)
        d = np.logspace(3.2, 10.8, 40)
        np.testing.assert_allclose(curve.data_for_loss(KAPLAN.loss(n, d)), d, rtol=1e-8)
        assert curve.data_for_plateau(0.99) == pytest.approx(float(KAPLAN.data_for_fraction(n, 0.99)), rel=1e-7)


def test_power_law_plus_constant_is_also_in_the_family():
    d = np.logspace(4, 10, 15)
    loss = 1.7 + 410.0 * d**-0.28
    curve = fit_scratch_curve(d, loss, model_size=1e8)
    np.testing.assert_allclose(curve.loss(d), loss, rtol=1e-9)
    assert curve.plateau == pytest.approx(1.7, rel=1e-6)


def test_inversion_is_robust_to_half_a_percent_noise_on_plateauing_curves():
    """0.5 % loss noise; the slope |d log L / d log D| is <= a_D = 0.095 and falls to ~0.02 at
    0.3 D(N), so a 0.5 % loss error alone moves D by 5-25 %. The fit averages 25 points, so we ask
    for the fitted curve within 1.5 % of the truth and every inverted D (up to 0.3 D(N), where the
    curve is flattening into its plateau) within a factor exp(0.35) = 1.4; measured worst case
    over these 12 curves: 0.9 % and 0.22."""
    worst_curve, worst_log_d = 0.0, 0.0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for n in (1e5, 1e7, 1e9):
            noisy = KAPLAN.loss(n, GRID) * np.exp(0.005 * rng.standard_normal(GRID.size))
            curve = fit_scratch_curve(GRID, noisy, model_size=n)
            worst_curve = max(worst_curve, np.max(np.abs(curve.loss(GRID) / KAPLAN.loss(n, GRID) - 1)))
            d = np.logspace(3.5, np.log10(0.3 * KAPLAN.data_for_fraction(n)), 30)
            worst_log_d = max(worst_log_d, np.max(np.abs(np.log(curve.data_for_loss(KAPLAN.loss(n, d)) / d))))
    assert worst_curve < 0.015
    assert worst_log_d < 0.35


def _table(scratch_n, scratch_d, scratch_l, ft_n, ft_d, ft_l) -> LossTable:
    return LossTable.from_columns(
        np.concatenate([scratch_n, ft_n]), np.concatenate([scratch_d, ft_d]),
        ["scratch"] * len(scratch_n) + ["finetune"] * len(ft_n), np.concatenate([scratch_l, ft_l]),
    )


@pytest.mark.filterwarnings("ignore:D\\(N\\) of model size:transferlab.scaling.ScalingWarning")
def test_censoring_is_reported_not_extrapolated():
    n = 1e7
    d = np.logspace(4, 9, 11)
    scratch = KAPLAN.loss(n, d)
    plateau = float(KAPLAN.infinite_data_loss(n))
    ft_d = np.full(4, 1e3)
    ft_l = np.array([
        float(KAPLAN.loss(n, 1e6)),   # inside the range: ok
        float(KAPLAN.loss(n, 1e3)),   # worse than the smallest scratch run: D_E < 1e4
        float(KAPLAN.loss(n, 1e10)),  # better than the largest scratch run, above the plateau
        plateau * 0.99,               # below the plateau: unreachable
    ])
    table = _table(np.full(d.size, n), d, scratch, np.full(4, n), ft_d, ft_l)
    with pytest.warns(ScalingWarning, match=r"3 low-data fine-tuned point\(s\).*censored.*N=1e\+07: 3"):
        eff = measure_effective_data(table, low_data_fraction=1.0)
    assert eff.status.tolist() == ["ok", "censored_low", "censored_high", "unreachable"]
    assert eff.effective_data[0] == pytest.approx(1e6, rel=1e-8)
    assert eff.effective_data[1] == pytest.approx(1e4)   # an upper bound, not an extrapolation
    assert eff.effective_data[2] == pytest.approx(1e9)   # a lower bound
    assert eff.effective_data[3] == pytest.approx(1e9)
    assert eff.points()[0].size == 1
    # widening the accepted range by two decades turns the out-of-range points into estimates
    with pytest.warns(ScalingWarning, match="N=1e\\+07: 1"):
        wide = measure_effective_data(table, low_data_fraction=1.0, extrapolation_decades=2.0)
    assert wide.status.tolist() == ["ok", "ok", "ok", "unreachable"]
    np.testing.assert_allclose(wide.effective_data[:3], [1e6, 1e3, 1e10], rtol=1e-7)


def test_low_data_filter_and_d_of_n(clean_effective):
    eff = clean_effective
    n = eff.model_size
    np.testing.assert_allclose(eff.data_for_plateau, KAPLAN.data_for_fraction(n, 0.99), rtol=1e-7)
    high = eff.status == "high_data"
    assert high.any()
    assert np.all(eff.data_size[high] > 0.1 * eff.data_for_plateau[high])
    assert np.all(eff.data_size[~high] <= 0.1 * eff.data_for_plateau[~high])
    assert set(eff.status.tolist()) <= {"ok", "high_data"}
    # noise-free: every usable D_T is the injected law's value
    d_f, n_ok, d_t = eff.points()
    np.testing.assert_allclose(d_t, 1.9e4 * d_f**0.18 * n_ok**0.38, rtol=1e-8)


@pytest.mark.filterwarnings("ignore:D\\(N\\) of model size:transferlab.scaling.ScalingWarning")
def test_points_without_transfer_are_flagged():
    n = 1e7
    d = np.logspace(4, 9, 11)
    ft_l = np.array([float(KAPLAN.loss(n, 2e5)) * 1.0005])  # a fine-tuned run *worse* than scratch at D_F
    table = _table(np.full(d.size, n), d, KAPLAN.loss(n, d), [n], [2e5], ft_l)
    eff = measure_effective_data(table, low_data_fraction=1.0)
    assert eff.status.tolist() == ["no_transfer"]
    assert eff.transferred_data[0] < 0 and eff.points()[0].size == 0


def test_rising_scratch_curve_is_an_error_naming_the_model_size():
    d = np.logspace(4, 9, 8)
    loss = KAPLAN.loss(1e6, d)
    loss[5] = loss[2] * 1.10
    with pytest.raises(DataError, match=r"model size 1e\+06 rises with data.*\+\d+\.\d %"):
        fit_scratch_curve(d, loss, model_size=1e6)
    # a wiggle at noise level is fine
    loss = KAPLAN.loss(1e6, d)
    loss[5] *= 1.004
    fit_scratch_curve(d, loss, model_size=1e6)


def test_too_few_scratch_points_and_missing_scratch_runs():
    d = np.logspace(4, 9, 4)
    with pytest.raises(DataError, match=r"model size 3e\+06 has scratch runs at 4 distinct"):
        fit_scratch_curve(d, KAPLAN.loss(3e6, d), model_size=3e6)
    d = np.logspace(4, 9, 8)
    table = _table(np.full(8, 1e6), d, KAPLAN.loss(1e6, d), [1e6, 1e8], [1e4, 1e4], [4.0, 3.0])
    with pytest.raises(DataError, match=r"model size\(s\) 1e\+08 have fine-tuned runs but no scratch"):
        measure_effective_data(table)


def test_poorly_fitting_scratch_curve_warns():
    d = np.logspace(4, 9, 12)
    loss = KAPLAN.loss(1e6, d) * np.where(np.arange(12) % 2, 1.08, 1.0)  # sawtooth
    with pytest.warns(ScalingWarning, match=r"model size 1e\+06 fits poorly"):
        fit_scratch_curve(d, loss, model_size=1e6, rise_tolerance=0.2)
