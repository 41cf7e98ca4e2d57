"""Every closed-form number of the figures of Tahir, Ganguli & Rotskoff (2024) (paper 1), and its limits.

Tolerances: the paper's printed numbers are rounded to 3 decimals (``abs=6e-4``) or angles to 0.1 deg
(``abs=0.06``); numbers derived here to 4 decimals use ``abs=6e-5``.
"""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.theory import fate

PI = np.pi
DEG = PI / 180


@pytest.mark.parametrize(
    ("gamma", "expected"), [(0.25, 0.263), (0.5, 0.040), (0.75, -0.130), (2.0, -0.460)]
)
def test_fig1_linear_transferability_at_pi_over_4(gamma: float, expected: float) -> None:
    # Fig. 1: T_lt(theta = pi/4, sigma = 0.2)
    assert fate.linear_transferability(PI / 4, gamma, 0.2) == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize(
    ("theta", "expected"),
    [(PI / 8, 0.424), (PI / 4, 0.207), (PI / 3, 0.0), (3 * PI / 8, -0.117), (PI / 2, -0.5)],
)
def test_fig2_finetune_transferability_gamma_half(theta: float, expected: float) -> None:
    # Fig. 2 (sigma = 0)
    assert fate.finetune_transferability(theta, 0.5) == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize(("theta", "expected"), [(PI / 8, 0.848), (PI / 4, 0.414), (3 * PI / 8, -0.235)])
def test_fig2_finetune_transferability_small_gamma(theta: float, expected: float) -> None:
    assert fate.finetune_transferability(theta, 1e-12) == pytest.approx(expected, abs=6e-4)


def test_fig2_finetune_zero_above_one_and_sixty_degree_line() -> None:
    gammas = np.array([1.0, 1.25, 2.0])
    assert np.all(fate.finetune_transferability(np.linspace(0, PI, 7)[:, None], gammas) == 0.0)
    assert fate.FINETUNE_BREAK_EVEN_ANGLE == pytest.approx(60 * DEG, abs=1e-15)
    g = np.linspace(0.05, 0.95, 10)
    assert np.allclose(fate.finetune_transferability(PI / 3, g), 0.0, atol=1e-15)
    assert np.all(fate.finetune_transferability(PI / 3 - 1e-3, g) > 0)
    assert np.all(fate.finetune_transferability(PI / 3 + 1e-3, g) < 0)
    assert np.allclose(fate.finetune_break_even_angle(g, 0.0), PI / 3, atol=1e-12)


def test_fig4_divergence_panel_numbers() -> None:
    # Fig. 4a: gamma = 0.5, sigma = 0.2, theta in {0, pi/2, pi}
    theta = np.array([0.0, PI / 2, PI])
    assert fate.task_kl(theta, 0.2) == pytest.approx([0.0, 25.0, 50.0], abs=1e-12)
    assert fate.linear_transferability(theta, 0.5, 0.2) == pytest.approx([0.54, -0.46, 0.54], abs=1e-12)
    assert fate.task_kl(PI / 4, 0.2) == pytest.approx(7.32, abs=6e-3)


def test_target7_kl_monotone_transferability_not() -> None:
    theta = np.linspace(0, PI, 181)
    kl = fate.task_kl(theta, 0.2)
    t_lt = fate.linear_transferability(theta, 0.5, 0.2)
    assert np.all(np.diff(kl) > 0)
    assert np.any(np.diff(t_lt) > 0) and np.any(np.diff(t_lt) < 0)
    # over [0, pi/2] alone KL orders T perfectly (rank correlation -1)
    half = theta <= PI / 2
    assert np.all(np.diff(t_lt[half]) < 0)


def test_target7_fixed_pair_flips_sign_three_times() -> None:
    gamma = np.linspace(0.005, 2.0, 4000)
    gamma = gamma[np.abs(gamma - 1) > 1e-9]
    signs = np.sign(fate.linear_transferability(PI / 4, gamma, 0.2))
    assert signs[0] > 0 and signs[-1] < 0
    assert np.count_nonzero(np.diff(signs)) == 3
    flips = gamma[1:][np.diff(signs) != 0]
    assert flips == pytest.approx([0.549, 0.911, 1.080], abs=1e-3)


@pytest.mark.parametrize(
    ("lam", "pi4", "pi8"),
    [(0.0, 0.5000, 0.1464), (0.1, 0.5041, 0.1535), (0.2, None, 0.1702), (0.3, 0.5266, 0.1919),
     (0.4, None, 0.2161), (0.5, 0.5556, 0.2413)],
)
def test_ridge_curve(lam: float, pi4: float | None, pi8: float) -> None:
    # the authors' notebook plot ridge_reg_lt (Thm 3.8, n -> inf)
    assert fate.linear_transfer_risk_ridge(PI / 8, lam) == pytest.approx(pi8, abs=6e-5)
    if pi4 is not None:
        assert fate.linear_transfer_risk_ridge(PI / 4, lam) == pytest.approx(pi4, abs=6e-5)


def test_ridge_finite_n_within_target3_tolerance() -> None:
    # the n = 5000 values lie within +-0.003 of the asymptote
    lam = np.array([0.0, 0.1, 0.3, 0.5])
    finite = fate.linear_transfer_risk(PI / 4, 5000, 0.2, lam)
    assert finite == pytest.approx(fate.linear_transfer_risk_ridge(PI / 4, lam), abs=3e-3)


@pytest.mark.parametrize(
    ("gamma", "noisy", "clean"),
    [(0.1, 0.904, 0.900), (0.25, 0.763, 0.75), (0.5, 0.540, 0.5), (0.75, 0.370, 0.25), (0.9, 0.460, 0.1),
     (0.99, 3.97, 0.01), (1.25, 0.16, 0.0), (1.5, 0.08, 0.0), (2.0, 0.04, 0.0)],
)
def test_scratch_risk_table(gamma: float, noisy: float, clean: float) -> None:
    assert fate.scratch_risk(gamma, 0.2) == pytest.approx(noisy, abs=6e-4)
    assert fate.scratch_risk(gamma, 0.0) == pytest.approx(clean, abs=1e-12)


def test_target1_scratch_finite_size() -> None:
    assert fate.scratch_risk(0.5, 0.2, d=500) == pytest.approx(0.5402, abs=6e-5)
    assert fate.scratch_risk(1.5, 0.2, d=500) == pytest.approx(0.0803, abs=6e-5)
    assert fate.scratch_risk(2.0, 0.2) == pytest.approx(0.040, abs=1e-12)
    # asymptotic spike value at gamma = 0.99; finite d is smaller there
    assert fate.scratch_risk(0.99, 0.2) == pytest.approx(3.97, abs=6e-4)


def test_target2_linear_transfer_exact() -> None:
    assert fate.linear_transfer_risk(PI / 4, 200, 0.2) == pytest.approx(0.5027, abs=6e-5)
    # eq. 10 written out: 0.5 + 0.54/198 at n = 200
    assert fate.linear_transfer_risk(PI / 4, 200, 0.2) == pytest.approx(0.5 + 0.54 / 198, abs=1e-12)


@pytest.mark.parametrize(
    ("deg", "below", "above"),
    [(22.5, None, 1.273), (45.0, (0.549, 0.911), 1.080), (60.0, (0.264, 0.946), 1.053),
     (67.5, (0.154, 0.953), 1.047), (90.0, (0.0, 0.960), 1.040)],
)
def test_linear_transfer_negative_intervals(deg: float, below: tuple[float, float] | None, above: float) -> None:
    interval = fate.linear_transfer_negative_interval(deg * DEG, 0.2)
    if below is None:
        assert not interval.exists and interval.lower == interval.upper
    else:
        assert interval.exists
        assert (interval.lower, interval.upper) == pytest.approx(below, abs=6e-4)
    assert fate.linear_transfer_negative_threshold(deg * DEG, 0.2) == pytest.approx(above, abs=6e-4)


def test_negative_band_onset_angle_and_anomalous_band() -> None:
    onset = np.arccos(1 - 0.2)
    assert onset / DEG == pytest.approx(36.87, abs=6e-3)
    assert not fate.linear_transfer_negative_interval(onset - 1e-6, 0.2).exists
    assert fate.linear_transfer_negative_interval(onset + 1e-6, 0.2).exists
    # anomalous positive band around gamma = 1 at theta = pi/2: (0.96, 1.04)
    t = fate.linear_transferability(PI / 2, [0.955, 0.965, 1.035, 1.045], 0.2)
    assert list(np.sign(t)) == [-1, 1, 1, -1]


def test_fig7_noiseless_boundary() -> None:
    theta = np.linspace(0.05, 0.95, 19) * PI / 2
    boundary = fate.linear_transfer_noiseless_boundary(theta)
    assert np.all(fate.linear_transferability(theta, boundary * 0.99, 0.0) > 0)
    assert np.all(fate.linear_transferability(theta, boundary * 1.01, 0.0) < 0)
    assert np.all(fate.linear_transferability(theta, [[1.2], [2.0]], 0.0) < 0)


@pytest.mark.parametrize(("gamma", "c", "deg"), [(0.25, 1.005, 59.8), (0.5, 1.013, 59.6), (0.75, 1.033, 58.9)])
def test_balancedness_correction_sigma_02(gamma: float, c: float, deg: float) -> None:
    # docs/derivations/finite_source_finetuning.md
    assert fate.balancedness_scale(gamma, 0.2) == pytest.approx(c, abs=6e-4)
    assert fate.finetune_break_even_angle(gamma, 0.2) / DEG == pytest.approx(deg, abs=0.06)
    t = fate.finetune_transferability_corrected(fate.finetune_break_even_angle(gamma, 0.2), gamma, 0.2)
    assert t == pytest.approx(0.0, abs=1e-12)


def test_balancedness_correction_sigma_1() -> None:
    assert fate.balancedness_scale(0.5, 1.0) == pytest.approx(1.225, abs=6e-4)
    assert fate.finetune_break_even_angle(0.5, 1.0) / DEG == pytest.approx(52.2, abs=0.06)
    assert np.allclose(fate.balancedness_scale(np.array([0.1, 0.5, 0.9, 1.5]), 0.0), 1.0, atol=1e-14)


@pytest.mark.parametrize(
    ("gamma_s", "sigma_s", "cos_star", "deg"), [(0.5, 0.2, 0.54, 57.3), (1.5, 0.2, 0.54, 57.3), (0.5, 0.3, 0.59, 53.8)]
)
def test_target6_finite_source_break_even(gamma_s: float, sigma_s: float, cos_star: float, deg: float) -> None:
    theta_star = fate.finite_source_break_even_angle(gamma_s, sigma_s)
    assert np.cos(theta_star) == pytest.approx(cos_star, abs=1e-12)
    assert theta_star / DEG == pytest.approx(deg, abs=0.06)
    t = fate.finetune_transferability_finite_source(theta_star, 0.5, gamma_s, sigma_s)
    assert t == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("gamma_s", "gamma", "theta", "sigma_s", "expected"),
    [(0.5, 0.5, PI / 3, 0.2, -0.020), (0.5, 0.5, PI / 4, 0.2, 0.084), (1.5, 0.5, PI / 4, 0.2, 0.167),
     (0.5, 0.25, 1.0, 0.3, -0.037)],
)
def test_target6_finite_source_values(gamma_s: float, gamma: float, theta: float, sigma_s: float, expected: float) -> None:
    t = fate.finetune_transferability_finite_source(theta, gamma, gamma_s, sigma_s)
    assert t == pytest.approx(expected, abs=6e-4)
