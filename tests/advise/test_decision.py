"""The advisor's statistics on constructed curves with known answers: the power-law fit (against scipy's
``linregress`` and the textbook mean-response formula), the k* set within 2 SE, the transfer-or-scratch decision
and the effective-data inversion (closed form, range bounds, bootstrap against the delta method)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from transferlab.advise import PowerLawFit, effective_data, fit_power_law, k_star_set, transfer_decision
from transferlab.errors import DataError

SIZES = np.repeat([10.0, 30.0, 100.0, 300.0, 1000.0], 2)  # five sizes, two seeds each


def noisy_curve(seed: int = 0, a: float = math.log(0.8), b: float = 0.5, noise: float = 0.1) -> np.ndarray:
    """Errors e = exp(a - b log n + noise * z) at SIZES."""
    z = np.random.default_rng(seed).standard_normal(SIZES.size)
    return np.exp(a - b * np.log(SIZES) + noise * z)


def test_fit_matches_scipy_linregress() -> None:
    errors = noisy_curve()
    fit = fit_power_law(SIZES, errors, floor=1e-6)
    ref = stats.linregress(np.log(SIZES), np.log(errors))
    # the same least-squares problem solved two ways: agreement to float64 rounding (1e-10 relative)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-10)
    assert fit.slope == pytest.approx(-ref.slope, rel=1e-10)
    assert math.sqrt(fit.cov[0][0]) == pytest.approx(ref.intercept_stderr, rel=1e-10)
    assert math.sqrt(fit.cov[1][1]) == pytest.approx(ref.stderr, rel=1e-10)
    assert fit.dof == SIZES.size - 2
    # the range is copied from the input sizes, no arithmetic: equal to the last bit (rel 1e-15 for form's sake)
    assert (fit.n_min, fit.n_max) == pytest.approx((10.0, 1000.0), rel=1e-15)


def test_prediction_se_is_the_mean_response_formula() -> None:
    errors = noisy_curve(seed=3)
    fit = fit_power_law(SIZES, errors, floor=1e-6)
    x, y = np.log(SIZES), np.log(errors)
    slope, intercept = np.polyfit(x, y, 1)
    s = math.sqrt(np.sum((y - (intercept + slope * x)) ** 2) / (x.size - 2))
    for n in (10.0, 77.0, 1000.0, 5000.0):
        x0 = math.log(n)
        se = s * math.sqrt(1 / x.size + (x0 - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
        mean, fit_se = fit.log_error(n)
        # closed forms of the same quantities: equal to float64 rounding (1e-9 relative)
        assert mean == pytest.approx(intercept + slope * x0, rel=1e-9)
        assert fit_se == pytest.approx(se, rel=1e-9)
        e, e_se = fit.error(n)
        assert e == pytest.approx(math.exp(mean), rel=1e-12) and e_se == pytest.approx(e * se, rel=1e-9)


def test_noise_free_power_law_is_recovered_and_inverted() -> None:
    errors = 0.8 * SIZES**-0.5
    fit = fit_power_law(SIZES, errors, floor=1e-6)
    # exact data: parameters to float64 rounding (1e-12), residual and so every SE ~ 0 (1e-7: the square root
    # of a rounding-level residual variance)
    assert fit.intercept == pytest.approx(math.log(0.8), rel=1e-12) and fit.slope == pytest.approx(0.5, rel=1e-12)
    assert fit.log_error(100.0)[1] < 1e-7
    assert fit.size_for_error(0.04) == pytest.approx(400.0, rel=1e-10)  # (0.8 / 0.04)^2
    flat = fit_power_law(SIZES, np.full(SIZES.size, 0.3) * SIZES**0.01, floor=1e-6)
    assert flat.size_for_error(0.1) == math.inf  # an error that rises with n is never "reached"


def test_zero_errors_are_floored() -> None:
    errors = noisy_curve()
    errors[-1] = 0.0
    floored = errors.copy()
    floored[-1] = 1e-3
    a, b = fit_power_law(SIZES, errors, floor=1e-3), fit_power_law(SIZES, floored, floor=1e-3)
    assert (a.intercept, a.slope) == pytest.approx((b.intercept, b.slope), rel=1e-12)


@pytest.mark.parametrize(("sizes", "errors", "fragment"), [
    ([10, 20], [0.1, 0.2], "needs >= 3 runs"),
    ([10, 10, 10], [0.1, 0.2, 0.3], "at >= 2 distinct sizes"),
    ([10, 20, 30], [0.1, float("nan"), 0.3], "finite"),
    ([10, 20, -30], [0.1, 0.2, 0.3], "sizes must be finite and > 0"),
])
def test_fit_rejects_bad_input(sizes: list[float], errors: list[float], fragment: str) -> None:
    with pytest.raises(DataError, match=fragment):
        fit_power_law(sizes, errors, floor=1e-3)


def test_k_star_set_within_two_se() -> None:
    # 2 SE of a difference of two SE-0.01 estimates: 2 sqrt(2) 0.01 = 0.0283
    estimates = {0: (0.10, 0.01), 1: (0.12, 0.01), 2: (0.13, 0.01), 3: (0.20, 0.01)}
    assert k_star_set(estimates) == (0, [0, 1])
    # a noisier k joins: 0.03 <= 2 sqrt(0.02^2 + 0.01^2) = 0.0447
    assert k_star_set({**estimates, 2: (0.13, 0.02)}) == (0, [0, 1, 2])
    # ties go to the larger k (fewer blocks to train); the best is always in its own set
    assert k_star_set({0: (0.1, 0.0), 2: (0.1, 0.0), 1: (0.3, 0.0)}) == (2, [0, 2])
    with pytest.raises(DataError):
        k_star_set({})


def test_transfer_decision_by_the_t_interval() -> None:
    t10 = 2.228138851986  # Student t, 10 degrees of freedom, 97.5 % quantile (tables)
    decision, (low, high) = transfer_decision(0.1, 0.02, 10)
    assert decision == "transfer"
    assert (low, high) == pytest.approx((0.1 - t10 * 0.02, 0.1 + t10 * 0.02), rel=1e-9)
    assert transfer_decision(-0.1, 0.02, 10)[0] == "scratch"
    assert transfer_decision(0.04, 0.02, 10)[0] == "either"  # 0.04 < 2.228 * 0.02
    assert transfer_decision(0.05, 0.02, 10)[0] == "transfer"  # 0.05 > 2.228 * 0.02
    assert transfer_decision(0.05, 0.02, 2)[0] == "either"  # t_2 = 4.30: fewer degrees of freedom, wider


def exact_scratch() -> PowerLawFit:
    return fit_power_law(SIZES, 0.8 * SIZES**-0.5, floor=1e-6)  # e = 0.8 n^-1/2 on 10..1000, no noise


def test_effective_data_inside_the_range() -> None:
    eff = effective_data(exact_scratch(), math.log(0.04), 0.0, 100.0)
    # scratch reaches 0.04 at n = (0.8 / 0.04)^2 = 400: D_E = 400, D_T = 300 (to float rounding; the noise-free
    # fit's covariance is ~1e-30, so the bootstrap draws equal the estimate to ~1e-9 relative)
    assert eff.status == "ok"
    assert eff.effective == pytest.approx(400.0, rel=1e-9) and eff.transferred == pytest.approx(300.0, rel=1e-9)
    assert eff.ci == pytest.approx((300.0, 300.0), rel=1e-6)
    assert eff.measured_range == pytest.approx((10.0, 1000.0), rel=1e-15)  # copied from the fit, as above


def test_effective_data_outside_the_range_is_a_bound() -> None:
    beyond = effective_data(exact_scratch(), math.log(0.01), 0.0, 100.0)  # D_E = 6400 > 1000
    assert beyond.status == "beyond_measured_range"
    # the bound is the range's edge (a copy) and D_T one exact subtraction of integers held as floats: rel 1e-15
    assert (beyond.effective, beyond.transferred) == pytest.approx((1000.0, 900.0), rel=1e-15)
    assert beyond.ci == (None, None)
    below = effective_data(exact_scratch(), math.log(0.5), 0.0, 100.0)  # D_E = 2.56 < 10: worse than scratch at 10
    assert below.status == "below_measured_range"
    assert (below.effective, below.transferred) == pytest.approx((10.0, -90.0), rel=1e-15)  # as above


def test_effective_data_interval_matches_the_delta_method() -> None:
    """Small noise: log D_E = (a - log e) / b is nearly linear in (a, b, log e), so the bootstrap's 95 % interval
    of log D_E is close to the delta method's mean +- 1.96 SE."""
    scratch = fit_power_law(SIZES, noisy_curve(seed=5, noise=0.03), floor=1e-6)
    log_e, log_se = math.log(0.05), 0.02
    eff = effective_data(scratch, log_e, log_se, 100.0, seed=1, draws=40000)
    a, b = scratch.intercept, scratch.slope
    grad = np.array([1 / b, -(a - log_e) / b**2])  # d log D_E / d(a, b)
    se = math.sqrt(grad @ np.array(scratch.cov) @ grad + (log_se / b) ** 2)
    centre = (a - log_e) / b
    expected = (math.exp(centre - 1.96 * se) - 100.0, math.exp(centre + 1.96 * se) - 100.0)
    assert eff.status == "ok"
    # the delta method ignores the curvature of 1/b (relative SE of b ~ 3 % here), and 40000 draws give the
    # quantiles to ~1 %: 3 % of the interval's ends
    assert eff.ci[0] == pytest.approx(expected[0], rel=0.03) and eff.ci[1] == pytest.approx(expected[1], rel=0.03)


def test_sweep_plan_sizes_and_where_scratch_extends() -> None:
    from types import SimpleNamespace

    from transferlab.advise import _plan

    def dataset(per_class: int) -> SimpleNamespace:
        return SimpleNamespace(y_train=np.repeat(np.arange(5), per_class), n_classes=5)

    # N = 60, C = 5: sizes geometric from max(2C, N/8) = 10 to 60; validation min(200, max(2C, N/4)) = 15
    C, sizes, scratch, val = _plan(dataset(144), "d", 60, 4)
    assert (C, sizes, val) == (5, [10, 18, 33, 60], 15)
    assert scratch == [10, 18, 33, 60, 120, 240]  # 240 + 15 need 48 + 3 <= 144 per class
    assert _plan(dataset(40), "d", 60, 4)[2] == [10, 18, 33, 60, 120]  # 4N would need 51 > 40 per class
    with pytest.raises(DataError, match="N >= 20"):
        _plan(dataset(144), "d", 19, 4)
    with pytest.raises(DataError, match="too little training data"):
        _plan(dataset(10), "d", 60, 4)
    with pytest.raises(DataError, match="single class"):
        _plan(SimpleNamespace(y_train=np.zeros(50, dtype=int), n_classes=1), "d", 60, 4)


def test_analysis_of_constructed_sweep_cells() -> None:
    """The whole analysis on sweep cells built from known power laws (two seeds at e * exp(+-0.01), so the
    least-squares line is the noise-free one): k*, its 2-SE set, the decision and D_E have closed forms."""
    from types import SimpleNamespace

    from transferlab.advise import _analyze

    laws = {("freeze", 0): 0.5, ("freeze", 1): 0.6, ("freeze", 2): 0.9, ("scratch", None): 0.8}  # e = c / sqrt(n)
    cells = []
    for (protocol, k), c in laws.items():
        for n in ([25, 50, 100, 200] if protocol == "freeze" else [25, 50, 100, 200, 400, 800]):
            e = c / math.sqrt(n)
            cells.append({"n": n, "protocol": protocol, "k": k, "status": "ok",
                          "errors": [e * math.exp(0.01), e * math.exp(-0.01)]})
    source = SimpleNamespace(n_blocks=2, block_names=("b1", "b2"))
    advice = _analyze("m", "d", 200, 10, source, cells, 1e-4, 0)
    root = math.sqrt(200)
    # the fits are the noise-free lines to float64 rounding; the seeds' +-1 % spread gives SEs of ~0.5 % of e
    for name, c in {"k=0": 0.5, "k=1": 0.6, "k=2": 0.9, "scratch": 0.8}.items():
        assert advice.errors_at_n[name][0] == pytest.approx(c / root, rel=1e-9)
        assert 0 < advice.errors_at_n[name][1] < 0.01 * c / root
    assert (advice.k_star, advice.k_star_set) == (0, [0])  # 0.6 vs 0.5: 20 % apart, far outside 2 SE
    assert advice.decision == "transfer"
    assert advice.gain == pytest.approx(0.3 / root, rel=1e-9)
    # scratch reaches 0.5 / sqrt(200) at n = 200 (0.8 / 0.5)^2 = 512, inside 25..800: D_T = 312
    assert advice.effective.status == "ok"
    assert advice.effective.effective == pytest.approx(512.0, rel=1e-9)
    assert advice.effective.transferred == pytest.approx(312.0, rel=1e-9)
    low, high = advice.effective.ci
    assert low is not None and high is not None and low < 312.0 < high
