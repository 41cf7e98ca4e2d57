"""Properties of the closed forms: broadcasting, limits, internal consistency and invalid input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from transferlab.errors import ConfigError
from transferlab.theory import fate

PI = np.pi
THETA = np.linspace(0.1, 1.5, 4)[:, None, None]  # (4, 1, 1)
GAMMA = np.array([0.3, 0.6, 1.4])[None, :, None]  # (1, 3, 1)
SIGMA = np.array([0.0, 0.2])[None, None, :]  # (1, 1, 2)

BROADCASTING: dict[str, tuple[Callable[[], np.ndarray], tuple[int, ...]]] = {
    "scratch_risk": (lambda: fate.scratch_risk(GAMMA, SIGMA), (1, 3, 2)),
    "scratch_risk_d": (lambda: fate.scratch_risk(GAMMA, SIGMA, d=100), (1, 3, 2)),
    "linear_transfer_risk": (lambda: fate.linear_transfer_risk(THETA, GAMMA * 100, SIGMA), (4, 3, 2)),
    "linear_transfer_risk_lam": (lambda: fate.linear_transfer_risk(THETA, GAMMA * 100, SIGMA, 0.1), (4, 3, 2)),
    "linear_transfer_risk_ridge": (lambda: fate.linear_transfer_risk_ridge(THETA, SIGMA), (4, 1, 2)),
    "linear_transferability": (lambda: fate.linear_transferability(THETA, GAMMA, SIGMA), (4, 3, 2)),
    "linear_transferability_d": (lambda: fate.linear_transferability(THETA, GAMMA, SIGMA, d=50, lam=0.1), (4, 3, 2)),
    "finetune_transferability": (lambda: fate.finetune_transferability(THETA, GAMMA), (4, 3, 1)),
    "finetune_risk": (lambda: fate.finetune_risk(THETA, GAMMA, SIGMA, d=100), (4, 3, 2)),
    "finetune_corrected": (lambda: fate.finetune_transferability_corrected(THETA, GAMMA, SIGMA), (4, 3, 2)),
    "finite_source": (lambda: fate.finetune_transferability_finite_source(THETA, GAMMA, 0.5, SIGMA), (4, 3, 2)),
    "lt_finite_source": (lambda: fate.linear_transfer_risk_finite_source(THETA, 100, 0.2, GAMMA, SIGMA), (4, 3, 2)),
    "negative_threshold": (lambda: fate.linear_transfer_negative_threshold(THETA, SIGMA), (4, 1, 2)),
    "negative_interval": (lambda: fate.linear_transfer_negative_interval(THETA, SIGMA).upper, (4, 1, 2)),
    "task_kl": (lambda: fate.task_kl(THETA, SIGMA + 0.1), (4, 1, 2)),
}


@pytest.mark.parametrize("name", sorted(BROADCASTING))
def test_broadcasting_shape_dtype_and_elementwise(name: str) -> None:
    compute, shape = BROADCASTING[name]
    out = compute()
    assert out.shape == shape and out.dtype == np.float64 and np.all(np.isfinite(out))


def test_scalar_in_scalar_out_and_elementwise_equality() -> None:
    grid = fate.linear_transferability(THETA, GAMMA, SIGMA, d=80, lam=0.1)
    one = fate.linear_transferability(float(THETA[2, 0, 0]), float(GAMMA[0, 1, 0]), float(SIGMA[0, 0, 1]), d=80, lam=0.1)
    assert one.shape == () and float(one) == pytest.approx(grid[2, 1, 1], rel=1e-12)


def test_sigma_to_zero_limits() -> None:
    g = np.array([0.2, 0.5, 0.8, 1.5])
    assert fate.scratch_risk(g, 1e-9) == pytest.approx(np.maximum(0, 1 - g), abs=1e-12)
    assert fate.balancedness_scale(g, 1e-9) == pytest.approx(1.0, abs=1e-12)
    theta = np.linspace(0, PI / 2, 7)
    assert fate.finetune_transferability_corrected(theta[:, None], g, 1e-9) == pytest.approx(
        fate.finetune_transferability(theta[:, None], g), abs=1e-12
    )
    interval = fate.linear_transfer_negative_interval(theta[1:], 0.0)
    assert interval.lower == pytest.approx(np.cos(theta[1:]) ** 2, abs=1e-12)
    assert interval.upper == pytest.approx(1.0, abs=1e-12)


def test_theta_to_zero_limits() -> None:
    n = np.array([5.0, 50.0, 500.0])
    assert fate.linear_transfer_risk(0.0, n, 0.3) == pytest.approx(0.09 / (n - 2), rel=1e-12)
    assert fate.linear_transfer_risk_ridge(0.0, 0.0) == pytest.approx(0.0, abs=1e-15)
    assert fate.finetune_transferability(0.0, 0.3) == pytest.approx(0.7, abs=1e-15)
    assert np.isinf(fate.linear_transfer_negative_threshold(0.0, 0.2))
    assert fate.task_kl(0.0, 0.5) == 0.0
    assert fate.finite_source_overlap(0.0, 1e9, 0.0) == pytest.approx(1.0, abs=1e-12)


def test_n_to_infinity_limits() -> None:
    theta = np.linspace(0, PI, 9)[:, None]
    lam = np.array([0.0, 0.1, 0.5])
    assert fate.linear_transfer_risk(theta, 1e7, 0.2, lam) == pytest.approx(
        fate.linear_transfer_risk_ridge(theta, lam), abs=1e-6
    )
    g = np.array([0.2, 0.5, 1.5, 3.0])
    assert fate.scratch_risk(g, 0.2, d=10**7) == pytest.approx(fate.scratch_risk(g, 0.2), abs=1e-5)
    assert fate.linear_transferability(PI / 5, g, 0.2, d=10**7) == pytest.approx(
        fate.linear_transferability(PI / 5, g, 0.2), abs=1e-5
    )
    assert fate.finetune_transferability_finite_source(PI / 5, g, 0.5, 0.2, d=10**7) == pytest.approx(
        fate.finetune_transferability_finite_source(PI / 5, g, 0.5, 0.2), abs=1e-5
    )


def test_infinite_source_limit_of_finite_source() -> None:
    theta = np.linspace(0, PI, 9)
    assert fate.finetune_transferability_finite_source(theta, 0.4, 1e8, 0.2) == pytest.approx(
        fate.finetune_transferability(theta, 0.4), abs=1e-7
    )
    assert fate.linear_transfer_risk_finite_source(theta, 50, 0.2, 1e8, 0.2, lam=0.1, layers=3) == pytest.approx(
        fate.linear_transfer_risk(theta, 50, 0.2, 0.1), abs=1e-6
    )


def test_consistency_between_forms() -> None:
    theta, g = PI / 5, np.array([0.3, 0.7, 1.6])
    assert fate.finetune_risk(theta, g, 0.2) == pytest.approx(
        fate.scratch_risk(g, 0.2) - fate.finetune_transferability(theta, g), abs=1e-15
    )
    # the phase boundaries are zeros of T_lt
    interval = fate.linear_transfer_negative_interval(PI / 3, 0.2)
    t = fate.linear_transferability(PI / 3, [interval.lower, interval.upper], 0.2)
    assert t == pytest.approx(0.0, abs=1e-12)
    assert fate.linear_transferability(PI / 3, fate.linear_transfer_negative_threshold(PI / 3, 0.2), 0.2) == (
        pytest.approx(0.0, abs=1e-12)
    )
    # ridge never helps linear transfer
    assert np.all(np.diff(fate.linear_transfer_risk_ridge(PI / 4, np.linspace(0, 2, 50))) > 0)


INVALID: dict[str, Callable[[], object]] = {
    "gamma == 1": lambda: fate.scratch_risk(1.0, 0.2),
    "gamma == 1 in T_lt": lambda: fate.linear_transferability(0.3, [0.5, 1.0], 0.2),
    "gamma <= 0": lambda: fate.scratch_risk(0.0, 0.2),
    "sigma < 0": lambda: fate.scratch_risk(0.5, -0.1),
    "n within 1 of d": lambda: fate.scratch_risk(0.99, 0.2, d=100),
    "d not an integer": lambda: fate.scratch_risk(0.5, 0.2, d=100.0),  # type: ignore[arg-type]
    "n <= 2": lambda: fate.linear_transfer_risk(0.3, 2, 0.2),
    "n < 1 with ridge": lambda: fate.linear_transfer_risk(0.3, 0.5, 0.2, 0.1),
    "lam < 0": lambda: fate.linear_transfer_risk_ridge(0.3, -0.1),
    "non-finite theta": lambda: fate.linear_transfer_risk_ridge(np.nan, 0.1),
    "non-numeric": lambda: fate.task_kl("wide", 0.1),
    "sigma == 0 in KL": lambda: fate.task_kl(0.3, 0.0),
    "gamma_s == 1": lambda: fate.finite_source_break_even_angle(1.0, 0.2),
    "break-even gamma >= 1": lambda: fate.finetune_break_even_angle(1.2, 0.2),
    "layers < 2": lambda: fate.linear_transfer_risk_finite_source(0.3, 50, 0.2, 0.5, 0.2, layers=1),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_raises_config_error(case: str) -> None:
    with pytest.raises(ConfigError):
        INVALID[case]()


def test_gamma_one_message_is_clear() -> None:
    with pytest.raises(ConfigError, match="interpolation threshold"):
        fate.scratch_risk(np.array([0.5, 1.0]), 0.2)


@pytest.mark.parametrize("layers", [3, 4, 6])
def test_balancedness_scale_deeper_networks(layers: int) -> None:
    g = np.array([0.2, 0.5, 0.8, 1.5])[:, None]
    s = np.array([0.0, 0.2, 1.0, 3.0])
    c = fate.balancedness_scale(g, s, layers=layers)
    a, b = np.maximum(0, 1 - g), fate.min_norm_sq_norm(g, s)
    assert c ** (2 * layers / (layers - 1)) - a * c**2 - b == pytest.approx(np.zeros_like(c), abs=1e-12)
    assert c[:, 0] == pytest.approx(1.0, abs=1e-12)  # sigma = 0 -> c = 1 at every depth
    assert np.all(np.diff(c, axis=1) > 0)
