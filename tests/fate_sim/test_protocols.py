"""Protocols and simulate_fate: simulation agrees with theory, sparse features, batch invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.nets import DeepLinear
from transferlab.protocols import finetune, linear_transfer, pretrain, scratch, simulate_fate, teacher_risk
from transferlab.tasks import linear_regression_data, teacher_pair

from .conftest import generator


# Independent closed forms (Tahir et al. 2024, Thm 3.6-3.7), exact at finite n, d for Gaussian inputs.
def scratch_risk_exact(n: int, d: int, sigma: float) -> float:
    """E||X^+ y - beta_t||^2 = 1 - n/d + sigma^2 n/(d-n-1) (n < d-1); sigma^2 d/(n-d-1) (n > d+1)."""
    return 1 - n / d + sigma**2 * n / (d - n - 1) if n < d - 1 else sigma**2 * d / (n - d - 1)


def finetune_risk_exact(n: int, d: int, sigma: float, theta: float) -> float:
    """beta_ft = X^+ y + (I - P) beta_s: R_ft = R_sc - (1 - n/d)_+ (2 cos theta - 1) (c = 1)."""
    return scratch_risk_exact(n, d, sigma) - max(1 - n / d, 0.0) * (2 * math.cos(theta) - 1)


def linear_transfer_risk_exact(n: int, sigma: float, theta: float) -> float:
    """1-D least squares on z = X beta_s: sin^2 theta + (sigma^2 + sin^2 theta)/(n - 2)."""
    return math.sin(theta) ** 2 + (sigma**2 + math.sin(theta) ** 2) / (n - 2)


CELLS = [  # (d, n, sigma): gamma = 0.25, 0.5 (noisy), 1.5 (noisy), away from gamma = 1
    (80, 20, 0.0),
    (80, 40, 0.2),
    (64, 96, 0.2),
]
THETAS = np.array([math.pi / 8, math.pi / 4, 3 * math.pi / 8])


@pytest.mark.parametrize(("d", "n", "sigma"), CELLS)
def test_simulation_agrees_with_theory(d: int, n: int, sigma: float) -> None:
    """GD-trained DLNs (alpha = 1e-3) land on the exact closed forms within Monte-Carlo error.

    3 angles x 16 instances per (d, n, sigma); per protocol and angle the mean risk must lie within
    4 standard errors (+ 0.01 for the O(alpha) / stopping bias) of theory; pooled over angles the
    transferability T_ft = R_sc - R_ft within 4 SE + 0.01. Linear transfer uses the rank-1,
    unregularised probe of Thm 3.7 (exact for every n).
    """
    instances = 16
    seeds = [1000 * n + 10 * d + k for k in range(3)]
    risks = simulate_fate(d=d, n=n, layers=2, thetas=THETAS, sigmas=np.full(3, sigma), instances=instances,
                          generators=[generator(s) for s in seeds], ridge=0.0, rank=1)
    se = {p: r.std(axis=1, ddof=1) / math.sqrt(instances) for p, r in risks.items()}
    for b, theta in enumerate(THETAS):
        expected = {
            "scratch": scratch_risk_exact(n, d, sigma),
            "linear_transfer": linear_transfer_risk_exact(n, sigma, theta),
            "finetune": finetune_risk_exact(n, d, sigma, theta),
        }
        for protocol, value in expected.items():
            mean = risks[protocol][b].mean()
            assert abs(mean - value) < 4 * se[protocol][b] + 0.01, (protocol, theta, mean, value)
    t_ft = risks["scratch"] - risks["finetune"]
    t_theory = np.array([max(1 - n / d, 0.0) * (2 * math.cos(t) - 1) for t in THETAS])
    t_se = t_ft.std(axis=1, ddof=1) / math.sqrt(instances)
    assert np.all(np.abs(t_ft.mean(axis=1) - t_theory) < 4 * t_se + 0.01), (t_ft.mean(axis=1), t_theory)


def test_gd_lands_on_the_closed_form_estimators_on_the_same_data() -> None:
    """Per instance: scratch -> X^+ y, fine-tuning -> X^+ y + (I - P) beta_s, ridge probe -> 1-D ridge.

    Data regenerated from the documented draw order of simulate_fate (teachers, init, target data).
    """
    d, n, sigma, theta, instances = 60, 30, 0.2, math.pi / 4, 6
    risks = simulate_fate(d=d, n=n, layers=2, thetas=np.array([theta]), sigmas=np.array([sigma]),
                          instances=instances, generators=[generator(7)])
    g = generator(7)
    pair = teacher_pair(d, theta, g)
    DeepLinear(d, 2, 1, init_scale=1e-3, generator=g)
    X, y = linear_regression_data(pair.beta_t, n, sigma, g, instances)
    pinv = torch.linalg.pinv(X)
    beta_sc = (pinv @ y[..., None])[..., 0]
    beta_ft = beta_sc + pair.beta_s - (pinv @ (X @ pair.beta_s)[..., None])[..., 0]
    z = X @ pair.beta_s  # the rank-1 feature; ridge c = z^T y / (z^T z + n lambda)
    beta_lt = ((z * y).sum(-1) / ((z * z).sum(-1) + n * 0.1))[:, None] * pair.beta_s
    np.testing.assert_allclose(risks["scratch"][0], teacher_risk(beta_sc, pair.beta_t).numpy(), atol=0.01)
    np.testing.assert_allclose(risks["finetune"][0], teacher_risk(beta_ft, pair.beta_t).numpy(), atol=0.02)
    np.testing.assert_allclose(risks["linear_transfer"][0], teacher_risk(beta_lt, pair.beta_t).numpy(), atol=0.01)


def test_pretraining_sparsifies_features() -> None:
    """Thm 3.4: top singular value ~ 1, the rest O(alpha), aligned with beta_s, balanced."""
    d, alpha = 60, 1e-3
    g = generator(3)
    pair = teacher_pair(d, 0.3, g)
    init = DeepLinear(d, 2, 1, init_scale=alpha, generator=g)
    net, result = pretrain(init, beta_s=pair.beta_s[None])
    assert bool(result.converged.all())
    W1, w2 = net.weights[0][0].detach(), net.weights[1][0].detach()
    U, S, _ = torch.linalg.svd(W1)
    assert S[0].item() == pytest.approx(1.0, abs=1e-3)
    assert S[1].item() < 3 * alpha  # measured 1.9e-3 (~1.9 alpha)
    assert abs(U[:, 0] @ pair.beta_s).item() > 0.999
    balancedness = torch.linalg.matrix_norm(W1.T @ W1 - w2 @ w2.T).item()
    assert balancedness < 1e-4  # O(alpha^2) at init plus O(lr) GD drift; measured 1.1e-5


def test_batch_invariance() -> None:
    """A batch of cells gives exactly what each cell gives alone (same generators)."""
    thetas, sigmas = np.array([0.3, 0.9, 1.2]), np.array([0.0, 0.2, 0.5])
    kwargs = dict(d=50, n=20, layers=2, instances=4)
    together = simulate_fate(thetas=thetas, sigmas=sigmas, generators=[generator(10 + i) for i in range(3)], **kwargs)
    for i in range(3):
        alone = simulate_fate(thetas=thetas[i:i + 1], sigmas=sigmas[i:i + 1], generators=[generator(10 + i)], **kwargs)
        for protocol, values in alone.items():
            assert values.shape == (1, 4)
            np.testing.assert_allclose(values[0], together[protocol][i], rtol=1e-12, atol=1e-14)


def test_finite_source_and_float32_and_numpy_generators() -> None:
    """Finite noisy source pretraining runs; float32 matches float64 within training tolerance."""
    kwargs = dict(d=40, n=20, layers=2, thetas=np.array([0.5]), sigmas=np.array([0.1]), instances=3,
                  protocols=("finetune", "linear_transfer"), source_n=60, source_sigma=0.2)
    r64 = simulate_fate(generators=[generator(1)], **kwargs)
    r32 = simulate_fate(generators=[generator(1)], dtype=torch.float32, **kwargs)
    assert list(r64) == ["finetune", "linear_transfer"]
    for protocol in r64:
        np.testing.assert_allclose(r32[protocol], r64[protocol], atol=5e-3)
    rnp = simulate_fate(generators=[np.random.default_rng(1)], **kwargs)
    assert rnp["finetune"].shape == (1, 3) and np.isfinite(rnp["finetune"]).all()


def test_linear_transfer_leak_and_rank_truncation() -> None:
    """lambda ~ 0 on full-rank-but-tiny features leaks below the sin^2 floor (why the paper plots lambda = 0.1)."""
    d, n, theta = 60, 30, math.pi / 4
    g = generator(11)
    pair = teacher_pair(d, theta, g)
    net, _ = pretrain(DeepLinear(d, 2, 1, init_scale=1e-3, generator=g), beta_s=pair.beta_s[None])
    net = net.repeat_instances(20)
    X, y = linear_regression_data(pair.beta_t, n, 0.0, g, 20)
    leaky = teacher_risk(linear_transfer(net, X, y, ridge=1e-7), pair.beta_t).mean().item()
    truncated = teacher_risk(linear_transfer(net, X, y, ridge=0.0, rank=1), pair.beta_t).mean().item()
    default = teacher_risk(linear_transfer(net, X, y), pair.beta_t).mean().item()
    floor = linear_transfer_risk_exact(n, 0.0, theta)  # 0.518
    assert leaky < floor - 0.03
    assert truncated == pytest.approx(floor, abs=0.03)
    assert default == pytest.approx(floor, abs=0.03)


def test_protocol_functions_leave_their_inputs_unchanged() -> None:
    g = generator(4)
    pair = teacher_pair(20, 0.2, g)
    init = DeepLinear(20, 2, 2, init_scale=1e-2, generator=g)
    before = [w.detach().clone() for w in init.weights]
    X, y = linear_regression_data(pair.beta_t, 10, 0.1, g, 2)
    scratch(init, X, y)
    finetune(init, X, y)
    assert all(torch.equal(a, b) for a, b in zip(before, init.weights, strict=True))


GOOD = dict(d=20, n=10, layers=2, thetas=np.array([0.3]), sigmas=np.array([0.1]), instances=2)


@pytest.mark.parametrize(
    "change",
    [
        {"d": 1}, {"n": 0}, {"layers": 0}, {"instances": 0}, {"d": 2.5},
        {"thetas": np.array([0.3, 0.4])}, {"thetas": np.array([np.nan])}, {"thetas": np.zeros((1, 1))},
        {"sigmas": np.array([-0.1])}, {"protocols": ("scratch", "probe")}, {"protocols": ()},
        {"protocols": ("scratch", "scratch")}, {"generators": []}, {"generators": [7]},
        {"source_n": 0}, {"source_sigma": -1.0}, {"init_scale": 0.0}, {"ridge": -0.1},
        {"dtype": torch.float16}, {"lr": 0.0}, {"max_steps": -5}, {"tol": -1e-6}, {"weight_decay": -1.0},
        {"rank": 0}, {"rank": 21},
    ],
)
def test_simulate_fate_bad_input(change) -> None:
    kwargs = {**GOOD, "generators": [generator(0)], **change}
    with pytest.raises(ConfigError):
        simulate_fate(**kwargs)


def test_protocol_bad_input() -> None:
    net = DeepLinear(5, 2, 2, init="identity")
    X, y = torch.zeros(2, 3, 5, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(DataError):
        linear_transfer(net, X[:, :, :4], y)
    with pytest.raises(ConfigError):
        pretrain(net)
    with pytest.raises(ConfigError):
        pretrain(net, beta_s=torch.ones(2, 5, dtype=torch.float64), X=X, y=y)


def test_weight_decay_acts_on_scratch_only_and_default_lr_is_stable_at_small_gamma() -> None:
    """gamma = 0.1 (lambda_max(X^T X / n) ~ 17): the default per-instance step size does not diverge."""
    kwargs = dict(d=60, n=6, layers=2, thetas=np.array([0.4]), sigmas=np.array([0.2]), instances=3)
    plain = simulate_fate(generators=[generator(2)], **kwargs)
    decayed = simulate_fate(generators=[generator(2)], weight_decay=0.1, max_steps=3000, **kwargs)
    assert np.all(np.isfinite(plain["finetune"]))
    assert not np.allclose(decayed["scratch"], plain["scratch"])
    np.testing.assert_array_equal(decayed["finetune"], plain["finetune"])
    np.testing.assert_array_equal(decayed["linear_transfer"], plain["linear_transfer"])


def test_finite_source_finetuning_follows_the_balancedness_corrected_theory():
    """GD fine-tuning from a finite noisy source lands on T_ft with the balancedness scale c, not on
    the paper's Thm C.1 (c = 1). The source draw dominates the variance, so 64 cells (one source
    each) x 4 target draws; tolerance 3 standard errors of the per-cell means (SE ~ 0.011)."""
    from transferlab.theory import fate

    d, n, ns, cells, theta = 80, 40, 40, 64, math.pi / 3
    risks = simulate_fate(
        d=d, n=n, layers=2, thetas=np.full(cells, theta), sigmas=np.zeros(cells), instances=4,
        protocols=("scratch", "finetune"), generators=[generator(500 + b) for b in range(cells)],
        source_n=ns, source_sigma=0.3,
    )
    per_cell = (risks["scratch"] - risks["finetune"]).mean(axis=1)
    mean, se = per_cell.mean(), per_cell.std(ddof=1) / math.sqrt(cells)
    corrected = float(fate.finetune_transferability_finite_source_corrected(theta, n / d, ns / d, 0.3, 0.0, d=d))
    paper = float(fate.finetune_transferability_finite_source(theta, n / d, ns / d, 0.3, d=d))
    assert abs(mean - corrected) < 3 * se, (mean, se, corrected)
    assert abs(mean - corrected) < abs(mean - paper), (mean, corrected, paper)
