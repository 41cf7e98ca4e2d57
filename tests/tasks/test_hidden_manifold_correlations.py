"""Correlated hidden-manifold pairs at the level of data: the knobs are the correlations of what a network sees
(preactivations, teacher fields, inputs) and of the generative parameters as random variables; the targets have
the documented label balance and input moments (docs/models/hidden_manifold.md).

The parameter-level identities (exact cosines, norms, q = 1 identical tasks and samples) are in
test_hidden_manifold.py; here every check is a Monte-Carlo estimate against a closed form, within 4 standard
errors (SE) of the estimate (4.5 where the largest of N inputs is taken). Draws are seeded: deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.tasks import correlated_pair, hidden_manifold_data, hidden_manifold_pair

#: latent samples per Monte-Carlo estimate
N_MC = 20000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shared_latents(pair, n: int, seed: int) -> torch.Tensor:
    """(n, max(D, D_t)) float64 latents; the source reads the first D coordinates, the target the first D_t."""
    D = max(pair.source.latent_dim, pair.target.latent_dim)
    return torch.randn(n, D, generator=gen(seed), dtype=torch.float64)


def _fields(task, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Preactivations (n, N) and teacher field (n,) of ``task`` at latents c (its first D columns)."""
    D = task.latent_dim
    scale = 1 / math.sqrt(D)
    return c[:, :D] @ task.features * scale, c[:, :D] @ task.teacher * scale


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of a and b along the first axis (per column)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / torch.sqrt((a * a).sum(0) * (b * b).sum(0))


@pytest.mark.parametrize(("rho_F", "rho_theta"), [(0.0, 0.0), (0.5, 0.9), (0.95, 0.3)])
def test_preactivations_and_teacher_fields_correlate_as_the_knobs(rho_F, rho_theta):
    """Same latent c in both tasks: Corr(z_s,j, z_t,j) = rho_F for every input j and Corr(h_s, h_t) = rho_theta
    (the covariance is F_s,j . F_t,j / D = rho_F ||F_s,j||^2 / D and the variances are equal). A sample
    correlation r of n Gaussian pairs has SE (1 - rho^2) / sqrt(n); the largest of N = 30 inputs is within 4.5 SE."""
    pair = hidden_manifold_pair(25, 30, generator=gen(1), rho_F=rho_F, rho_theta=rho_theta)
    c = _shared_latents(pair, N_MC, seed=2)
    (z_s, h_s), (z_t, h_t) = _fields(pair.source, c), _fields(pair.target, c)
    se_F = (1 - rho_F**2) / math.sqrt(N_MC) + 1e-12
    assert float((_corr(z_s, z_t) - rho_F).abs().max()) < 4.5 * se_F
    r = float(_corr(h_s[:, None], h_t[:, None])[0])
    assert abs(r - rho_theta) < 4 * ((1 - rho_theta**2) / math.sqrt(N_MC) + 1e-12)


@pytest.mark.parametrize("rho_F", [0.3, 0.8])
def test_sign_inputs_correlate_by_sheppards_formula(rho_F):
    """x = sign(z): for standard bivariate normals with correlation rho, E[sign(z_s) sign(z_t)] =
    (2 / pi) arcsin(rho) (Sheppard 1899), an input-level consequence of the feature knob that the library does not
    compute. Per input the SE is the sample SD of the products / sqrt(n); the largest of N = 30 within 4.5 SE."""
    pair = hidden_manifold_pair(25, 30, generator=gen(3), rho_F=rho_F, activation="sign")
    c = _shared_latents(pair, N_MC, seed=4)
    x_s = torch.sign(_fields(pair.source, c)[0])
    x_t = torch.sign(_fields(pair.target, c)[0])
    # the library's own sampler gives these inputs (same formula, same latents)
    x_lib, _, c_lib = hidden_manifold_data(pair.source, 50, gen(5), return_latent=True, dtype=torch.float64)
    assert torch.equal(x_lib, torch.sign(_fields(pair.source, c_lib)[0]))
    prod = x_s * x_t
    se = prod.std(0) / math.sqrt(N_MC)
    expected = 2 / math.pi * math.asin(rho_F)
    assert bool(((prod.mean(0) - expected).abs() < 4.5 * se).all())


@pytest.mark.parametrize("q", [0.0, 0.3, 0.8])
def test_parameter_entries_correlate_as_q_across_the_draw(q):
    """Viewed as random variables, the entries of F_s and F_t (and of theta_s and theta_t) have Pearson correlation
    q under correlated_pair: over the D * N = 20000 feature entries within 4 SE = 4 (1 - q^2) / sqrt(D N), and over
    the teacher entries pooled across 200 seeds (D = 20 each: 4000 pairs) within 4 (1 - q^2) / sqrt(4000)."""
    D, N = 40, 500
    pair = correlated_pair(D, N, q, generator=gen(6))
    r_F = float(_corr(pair.source.features.reshape(-1, 1), pair.target.features.reshape(-1, 1))[0])
    assert abs(r_F - q) < 4 * (1 - q**2) / math.sqrt(D * N) + 1e-12
    pairs = [correlated_pair(20, 3, q, generator=gen(1000 + s)) for s in range(200)]
    ts = torch.cat([p.source.teacher for p in pairs])[:, None]
    tt = torch.cat([p.target.teacher for p in pairs])[:, None]
    assert abs(float(_corr(ts, tt)[0]) - q) < 4 * (1 - q**2) / math.sqrt(ts.shape[0]) + 1e-12


@pytest.mark.parametrize(("q", "delta_D_max"), [(0.0, 0), (0.5, 0), (0.2, -10), (0.2, 12)])
def test_target_labels_are_balanced(q, delta_D_max):
    """P(y = 1) = 1/2 for the target of every pair (c -> -c symmetry), with latent features deleted or added
    too: n = 20000, SE = 0.5 / sqrt(n)."""
    pair = correlated_pair(30, 20, q, generator=gen(7), delta_D_max=delta_D_max)
    _, y = hidden_manifold_data(pair.target, N_MC, gen(8))
    assert abs(float(y.double().mean()) - 0.5) < 4 * 0.5 / math.sqrt(N_MC)


@pytest.mark.parametrize("delta_D", [-12, 15])
def test_target_input_moments_with_latent_features_deleted_or_added(delta_D):
    """The target's inputs (latent dimension D_t = D + delta_D, scaled by 1 / sqrt(D_t)) have the moments
    input_moments() documents (tanh: mean 0, variance E[tanh(s_j u)^2] with s_j^2 = ||F_t[:, j]||^2 / D_t):
    n = 20000, each of N = 30 inputs' sample mean and mean square within 4.5 SE. And s_j^2 stays near 1
    (fresh rows are N(0, 1), so ||F_t[:, j]||^2 / D_t is a chi-square mean: SE sqrt(2 / D_t))."""
    pair = hidden_manifold_pair(40, 30, generator=gen(9), rho_F=0.5, rho_theta=0.5, delta_D=delta_D)
    target = pair.target
    mean, var = target.input_moments()
    x, _ = hidden_manifold_data(target, N_MC, gen(10), dtype=torch.float64)
    assert x.shape == (N_MC, 30)
    se_mean = x.std(0) / math.sqrt(N_MC)
    se_sq = (x * x).std(0) / math.sqrt(N_MC)
    assert bool(((x.mean(0) - mean).abs() <= 4.5 * se_mean).all())
    assert bool(((x.pow(2).mean(0) - (var + mean**2)).abs() <= 4.5 * se_sq).all())
    s2 = (target.features**2).sum(0) / target.latent_dim
    assert float(np.abs(s2.numpy() - 1).max()) < 4.5 * math.sqrt(2 / target.latent_dim)
