"""Monte-Carlo check of the closed forms with closed-form estimators (numpy, no training).

Estimators: scratch ``X^+ y`` (``lstsq``), linear transfer = rank-one ridge on ``z = X beta_s``,
fine-tuning ``X^+ y + (I - P) beta_s`` (or ``(I - P) X_s^+ y_s`` for a finite source). Each mean over
independent draws must lie within 4 standard errors of the exact finite-size formula (seeded, so
deterministic; 4 SE keeps the false-alarm rate negligible across all the checks).
"""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.theory import fate

PI = np.pi
D = 200
DRAWS = 40


def _teachers(rng: np.random.Generator, d: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``beta_s`` and ``beta_t`` at angle ``theta`` (Gram-Schmidt), shapes ``(d,)``."""
    beta_s = rng.standard_normal(d)
    beta_s /= np.linalg.norm(beta_s)
    g = rng.standard_normal(d)
    orth = g - (g @ beta_s) * beta_s
    orth /= np.linalg.norm(orth)
    return beta_s, np.cos(theta) * beta_s + np.sin(theta) * orth


def _within(samples: list[float] | np.ndarray, expected: float, k: float = 4.0) -> None:
    arr = np.asarray(samples)
    se = arr.std(ddof=1) / np.sqrt(arr.size)
    assert abs(arr.mean() - expected) <= k * se + 1e-12, f"{arr.mean():.4f} ± {se:.4f} vs {expected:.4f}"


@pytest.mark.parametrize(("gamma", "theta", "sigma"), [(0.5, PI / 4, 0.2), (0.25, PI / 8, 0.2), (1.5, PI / 3, 0.2)])
def test_protocol_risks_match_exact_formulas(gamma: float, theta: float, sigma: float) -> None:
    rng = np.random.default_rng(12345)
    n = int(round(gamma * D))
    r_sc, r_lt, r_ft, t_ft = [], [], [], []
    for _ in range(DRAWS):
        beta_s, beta_t = _teachers(rng, D, theta)
        x = rng.standard_normal((n, D))
        y = x @ beta_t + sigma * rng.standard_normal(n)
        beta_sc = np.linalg.lstsq(x, y, rcond=None)[0]
        z = x @ beta_s
        beta_lt = (z @ y) / (z @ z) * beta_s
        pinv = np.linalg.pinv(x)
        beta_ft = beta_sc + beta_s - pinv @ (x @ beta_s)
        r_sc.append(np.sum((beta_sc - beta_t) ** 2))
        r_lt.append(np.sum((beta_lt - beta_t) ** 2))
        r_ft.append(np.sum((beta_ft - beta_t) ** 2))
        t_ft.append(r_sc[-1] - r_ft[-1])
    _within(r_sc, float(fate.scratch_risk(n / D, sigma, d=D)))
    _within(r_lt, float(fate.linear_transfer_risk(theta, n, sigma)))
    _within(r_ft, float(fate.finetune_risk(theta, n / D, sigma, d=D)))
    _within(t_ft, float(fate.finetune_transferability(theta, n / D)))


@pytest.mark.parametrize(("n", "theta", "lam"), [(30, PI / 4, 0.1), (30, PI / 8, 0.5), (200, 1.2, 0.3)])
def test_ridge_probe_exact_finite_n(n: int, theta: float, lam: float) -> None:
    # the probe only sees z = X beta_s and y = cos(theta) z + r with r ~ N(0, sigma^2 + sin^2 theta)
    rng = np.random.default_rng(7)
    sigma, draws = 0.2, 20000
    z = rng.standard_normal((draws, n))
    r = np.sqrt(sigma**2 + np.sin(theta) ** 2) * rng.standard_normal((draws, n))
    y = np.cos(theta) * z + r
    b = np.sum(z * y, axis=1) / (np.sum(z * z, axis=1) + n * lam)
    risk = np.sin(theta) ** 2 + (b - np.cos(theta)) ** 2
    _within(risk, float(fate.linear_transfer_risk(theta, n, sigma, lam)))


@pytest.mark.parametrize(
    ("gamma_s", "gamma", "theta", "sigma_s"),
    [(0.5, 0.5, PI / 3, 0.2), (0.5, 0.5, PI / 4, 0.2), (1.5, 0.5, PI / 4, 0.2), (0.5, 0.25, 1.0, 0.3)],
)
def test_finite_source_finetuning(gamma_s: float, gamma: float, theta: float, sigma_s: float) -> None:
    # App. C: beta_ft = beta_sc + (I - P) X_s^+ y_s with sigma_t = 0
    rng = np.random.default_rng(2024)
    n, n_s = int(round(gamma * D)), int(round(gamma_s * D))
    t = []
    for _ in range(DRAWS):
        beta_s, beta_t = _teachers(rng, D, theta)
        x_s = rng.standard_normal((n_s, D))
        beta_hat_s = np.linalg.lstsq(x_s, x_s @ beta_s + sigma_s * rng.standard_normal(n_s), rcond=None)[0]
        x = rng.standard_normal((n, D))
        pinv = np.linalg.pinv(x)
        beta_sc = pinv @ (x @ beta_t)
        beta_ft = beta_sc + beta_hat_s - pinv @ (x @ beta_hat_s)
        t.append(np.sum((beta_sc - beta_t) ** 2) - np.sum((beta_ft - beta_t) ** 2))
    _within(t, float(fate.finetune_transferability_finite_source(theta, n / D, n_s / D, sigma_s, d=D)))


def test_balancedness_scale_from_realised_moments() -> None:
    # c solves c^4 - a c^2 - b = 0 with the realised a = ||(I-P) beta_s||^2, b = ||X^+ y||^2
    rng = np.random.default_rng(3)
    gamma, sigma = 0.5, 1.0
    n = int(gamma * D)
    c = []
    for _ in range(DRAWS):
        beta_s, beta_t = _teachers(rng, D, PI / 4)
        x = rng.standard_normal((n, D))
        pinv = np.linalg.pinv(x)
        a = np.sum((beta_s - pinv @ (x @ beta_s)) ** 2)
        b = np.sum((pinv @ (x @ beta_t + sigma * rng.standard_normal(n))) ** 2)
        c.append(np.sqrt((a + np.sqrt(a * a + 4 * b)) / 2))
    # plug-in of expected moments vs mean of realised c: equal up to Jensen O(1/d) and MC error
    assert np.mean(c) == pytest.approx(float(fate.balancedness_scale(gamma, sigma, d=D)), abs=0.01)
    assert np.mean(c) == pytest.approx(1.225, abs=0.02)
