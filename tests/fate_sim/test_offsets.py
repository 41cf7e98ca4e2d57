"""Issue 12 §4: the offsets between the fate simulation and theory, explained term by term.

Three causes, each checked by making it vanish as predicted:

1. theory: the balancedness formula with expected moments plugged in misses an O(1/d) Jensen term
   (docs/derivations/finetune_finite_d.md); the corrected expectation matches a Monte Carlo of the
   exact per-draw estimator at two widths, the plug-in value does not;
2. simulation, stopping rule: stopping at excess train loss <= tol leaves the slowest directions of
   X^T X unconverged -- an implicit ridge that lowers the risk by O(sqrt(tol / lambda_min)); near
   gamma = 1 the bias shrinks like sqrt(tol);
3. simulation, step size: discrete GD steps break the conserved balancedness by O(lr), which shrinks
   the fine-tuned null-space scale c; the fine-tuning bias halves when the step size halves.

The GD checks are paired (GD and its gradient-flow limit on the same data), so they carry almost no
Monte-Carlo noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from transferlab.nets import DeepLinear
from transferlab.protocols import finetune, pretrain, scratch, teacher_risk
from transferlab.tasks import linear_regression_data, teacher_pair
from transferlab.theory import fate
from transferlab.train import GDSettings

from .conftest import generator


def per_draw_transferability(d: int, n: int, sigma: float, theta: float, layers: int, draws: int,
                             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-draw fine-tuning transferability T_i = 2 c_i u_i - c_i^2 a_i (own c_i per draw) and the
    c = 1 estimator 2 u_i - a_i, from draws of X (n, d) and the noise; written from the definitions
    (pseudo-inverse, brentq root of x^p - a x - b), independently of transferlab.theory."""
    rng = np.random.default_rng(seed)
    beta_s = np.zeros(d)
    beta_s[0] = 1.0
    beta_t = np.zeros(d)
    beta_t[:2] = math.cos(theta), math.sin(theta)
    X = rng.standard_normal((draws, n, d))
    y = X @ beta_t + sigma * rng.standard_normal((draws, n))
    pinv = np.linalg.pinv(X)
    beta_sc = np.einsum("mdn,mn->md", pinv, y)
    null = beta_s - np.einsum("mdn,mn->md", pinv, X @ beta_s)
    a, b, u = (null**2).sum(-1), (beta_sc**2).sum(-1), null @ beta_t
    p = layers / (layers - 1)
    x = np.array([brentq(lambda z, ai=ai, bi=bi: z**p - ai * z - bi, 1e-12, 10.0 + ai + bi) for ai, bi in zip(a, b)])
    return 2 * np.sqrt(x) * u - x * a, 2 * u - a


@pytest.mark.parametrize(("layers", "sigma", "theta", "gamma", "resolved_at_48"), [
    (2, 0.2, math.pi / 4, 0.5, True),
    (2, 0.2, 3 * math.pi / 8, 0.3, True),
    (2, 0.5, math.pi / 4, 0.6, False),  # large noise: the Var(||X^+ eps||^2) terms matter; noisier
    (3, 0.2, math.pi / 4, 0.5, True),
])
def test_finite_d_term_of_the_finetune_theory(layers: int, sigma: float, theta: float, gamma: float,
                                              resolved_at_48: bool) -> None:
    """E T_i against the corrected expectation and the plug-in value, at d = 24 and 48.

    Control variate: the c = 1 estimator 2u - a has the exact mean (1 - n/d)(2 cos theta - 1), so
    E T = mean(T - T1) + (1 - n/d)(2 cos theta - 1) with a small standard error. Tolerance: 4 SE plus
    2/d^2 for the O(d^-2) remainder of the expansion (the measured d * offset differs between d = 25
    and 50 by less than 0.03, i.e. the d^-2 coefficient is below ~1.5). The plug-in value misses by
    the O(1/d) term itself: more than 4 SE away at d = 24 and, where the draws resolve it
    (``resolved_at_48``), at d = 48 too, with a miss that roughly halves as d doubles.
    """
    misses = []
    for d, draws in ((24, 3000), (48, 1500)):
        n = round(gamma * d)
        T, T1 = per_draw_transferability(d, n, sigma, theta, layers, draws, seed=d + 7 * layers)
        mean = (T - T1).mean() + (1 - n / d) * (2 * math.cos(theta) - 1)
        se = (T - T1).std(ddof=1) / math.sqrt(draws)
        expected = float(fate.finetune_transferability_corrected(theta, n / d, sigma, d, layers))
        plug_in = float(fate.finetune_transferability_corrected(theta, n / d, sigma, d, layers, plug_in=True))
        assert abs(mean - expected) < 4 * se + 2 / d**2, (d, mean, se, expected, plug_in)
        if d == 24 or resolved_at_48:
            assert abs(mean - plug_in) > 4 * se, (d, mean, se, plug_in)
        misses.append(plug_in - mean)
    if resolved_at_48:
        assert 1.4 < misses[0] / misses[1] < 2.9, misses


def test_finite_d_term_next_to_the_spike() -> None:
    """d - n = 4, the closest integer n to d where the expansion exists (Var ||X^+ eps||^2 ~ 1/(d - n - 3)):
    d = 40, n = 36, theta = pi/4, sigma = 0.2; within 4 SE of the Monte Carlo (measured: 0.0329 +- 0.0003
    against 0.0331; plug-in 0.0340)."""
    d, n, theta = 40, 36, math.pi / 4
    T, T1 = per_draw_transferability(d, n, 0.2, theta, 2, 3000, seed=11)
    mean = (T - T1).mean() + (1 - n / d) * (2 * math.cos(theta) - 1)
    se = (T - T1).std(ddof=1) / math.sqrt(T.size)
    assert abs(mean - float(fate.finetune_transferability_corrected(theta, n / d, 0.2, d))) < 4 * se


def paired_gd_bias(d: int, n: int, theta: float, settings: GDSettings, instances: int = 4, seed: int = 3
                   ) -> tuple[float, float]:
    """Mean over instances of R(GD) - R(gradient-flow limit) on the same data, for scratch (limit X^+ y)
    and fine-tuning (limit X^+ y + c_i (I - P) beta_0 with beta_0 the pretrained end-to-end vector and
    c_i from the balancedness equation, L = 2), sigma = 0.2, init scale 1e-3."""
    g = generator(seed)
    pair = teacher_pair(d, theta, g)
    init = DeepLinear(d, 2, 1, init_scale=1e-3, generator=g)
    X, y = linear_regression_data(pair.beta_t, n, 0.2, g, instances)
    net_sc, res_sc = scratch(init.repeat_instances(instances), X, y, settings)
    source, _ = pretrain(init, beta_s=pair.beta_s[None], settings=GDSettings(tol=1e-12, max_steps=50_000))
    net_ft, res_ft = finetune(source.repeat_instances(instances), X, y, settings)
    assert bool(res_sc.converged.all()) and bool(res_ft.converged.all())
    pinv = torch.linalg.pinv(X)
    beta_sc = (pinv @ y[..., None])[..., 0]
    beta0 = source.end_to_end().detach()[0]
    null = beta0 - (pinv @ (X @ beta0)[..., None])[..., 0]
    r0_sq = beta0 @ beta0
    a, b = (null * null).sum(-1) / r0_sq, (beta_sc * beta_sc).sum(-1) / r0_sq
    beta_ft = beta_sc + torch.sqrt((a + torch.sqrt(a * a + 4 * b)) / 2)[:, None] * null
    bias_sc = teacher_risk(net_sc.end_to_end().detach(), pair.beta_t) - teacher_risk(beta_sc, pair.beta_t)
    bias_ft = teacher_risk(net_ft.end_to_end().detach(), pair.beta_t) - teacher_risk(beta_ft, pair.beta_t)
    return float(bias_sc.mean()), float(bias_ft.mean())


def test_stopping_tolerance_bias_shrinks_like_sqrt_tol_near_the_spike() -> None:
    """gamma = 0.9, d = 40: at the fate default tol = 1e-6 scratch GD ends measurably below its
    limit's risk (early stopping acts as a ridge on the smallest eigen-directions, removing fitted
    noise); at tol = 1e-9 the bias is ~sqrt(1000) = 32 times smaller (measured: 31 and 16 times for
    scratch and fine-tuning, whose remainder is the step-size bias below; asserted: > 10 times, the
    law holds exactly only when one direction dominates)."""
    loose = paired_gd_bias(40, 36, math.pi / 4, GDSettings(tol=1e-6, max_steps=200_000))
    tight = paired_gd_bias(40, 36, math.pi / 4, GDSettings(tol=1e-9, max_steps=200_000))
    assert loose[0] < -5e-4 and loose[1] < -5e-4, loose  # measured -0.0040 and -0.0053
    assert abs(tight[0]) < abs(loose[0]) / 10 and abs(tight[1]) < abs(loose[1]) / 10, (loose, tight)


def test_finetune_step_size_bias_is_first_order_in_the_step() -> None:
    """gamma = 0.3, d = 40, theta = 3 pi / 8, tol = 1e-10 (the stopping bias negligible here): the
    fine-tuning bias is negative and halves with the step size (ratio 2 within 15%: the O(lr^2)
    remainder), while scratch, which starts balanced at ~0 and stays balanced up to O(lr alpha^2),
    shows none (< 2e-4)."""
    settings = {lr: GDSettings(lr=lr, tol=1e-10, max_steps=200_000) for lr in (0.02, 0.01)}
    big = paired_gd_bias(40, 12, 3 * math.pi / 8, settings[0.02])
    small = paired_gd_bias(40, 12, 3 * math.pi / 8, settings[0.01])
    assert big[1] < -5e-4, big
    assert 1.7 < big[1] / small[1] < 2.3, (big, small)
    assert abs(big[0]) < 2e-4 and abs(small[0]) < 2e-4, (big, small)


def test_the_two_simulation_fixes_remove_most_of_the_bias() -> None:
    """The opt-in fixes of ``GDSettings``, each on the cell where its cause dominates.

    Distance stopping rule (stop at excess <= tol * lambda_min), gamma = 0.9: the stopping bias of the
    test above falls more than 5 times at the same tol (measured: scratch -0.0040 -> -0.0003,
    fine-tuning -0.0053 -> -0.0007, whose remainder is the step-size bias). Warm-up (fine-tuning's
    first 200 steps at a tenth of the step), gamma = 0.3 with the automatic step: the step-size bias
    falls more than 5 times (measured -0.0138 -> -0.0013); scratch, with no such bias, is unchanged."""
    plain = paired_gd_bias(40, 36, math.pi / 4, GDSettings(tol=1e-6, max_steps=200_000))
    distance = paired_gd_bias(40, 36, math.pi / 4, GDSettings(tol=1e-6, max_steps=200_000, stop_rule="distance"))
    assert plain[0] < -2e-3 and plain[1] < -2e-3, plain
    assert abs(distance[0]) < abs(plain[0]) / 5 and abs(distance[1]) < abs(plain[1]) / 5, (plain, distance)
    auto = paired_gd_bias(40, 12, 3 * math.pi / 8, GDSettings(tol=1e-10, max_steps=200_000))
    warm = paired_gd_bias(40, 12, 3 * math.pi / 8, GDSettings(tol=1e-10, max_steps=200_000, warmup_steps=200))
    assert auto[1] < -5e-3, auto
    assert abs(warm[1]) < abs(auto[1]) / 5, (auto, warm)
    assert abs(warm[0] - auto[0]) < 1e-5, (auto, warm)  # scratch: the same limit, reached either way
