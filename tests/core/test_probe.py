"""The linear probes against scikit-learn: ridge (alpha = n lambda) and multinomial logistic (C = 1 / (n lambda))."""

from __future__ import annotations

import pytest
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.nets import mlp
from transferlab.protocols._probe import linear_probe

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _classification(instances: int, n: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian features and labels from a noisy linear teacher (not separable, so the optimum is interior)."""
    g = _gen(seed)
    f = torch.randn(instances, n, d, generator=g, dtype=torch.float64)
    teacher = torch.randn(d, c, generator=g, dtype=torch.float64)
    logits = f @ teacher + torch.randn(instances, n, c, generator=g, dtype=torch.float64)
    return f, logits.argmax(-1)


def test_ridge_equals_sklearn_ridge_with_alpha_n_lambda() -> None:
    g = _gen(1)
    n, d, lam = 50, 7, 0.03
    f = torch.randn(3, n, d, generator=g, dtype=torch.float64) * 2 + 1
    y = torch.randn(3, n, 2, generator=g, dtype=torch.float64)
    probe = linear_probe(f, y, n_classes=None, l2=lam)
    assert probe.weight.shape == (3, d, 2) and probe.bias.shape == (3, 1, 2) and bool(probe.converged.all())
    for i in range(3):
        ref = sklearn_linear.Ridge(alpha=n * lam).fit(f[i].numpy(), y[i].numpy())
        # both are direct float64 solves of a well-conditioned 7 x 7 system: agreement to ~1e-14
        torch.testing.assert_close(probe.weight[i], torch.from_numpy(ref.coef_.T), rtol=0, atol=1e-10)
        torch.testing.assert_close(probe.bias[i, 0], torch.from_numpy(ref.intercept_), rtol=0, atol=1e-10)
    # the stationarity condition of the stated objective holds at the solution
    assert float(probe.grad_norm.max()) < 1e-10


def test_ridge_without_penalty_is_min_norm_least_squares() -> None:
    g = _gen(2)
    f = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    probe = linear_probe(f, y, n_classes=None, l2=0.0)
    ref = sklearn_linear.LinearRegression().fit(f.numpy(), y.numpy())
    torch.testing.assert_close(probe.weight[0, :, 0], torch.from_numpy(ref.coef_), rtol=0, atol=1e-10)


def test_logistic_equals_sklearn_multinomial_with_c_one_over_n_lambda() -> None:
    n, d, c, lam = 90, 6, 4, 0.02
    f, y = _classification(3, n, d, c)
    probe = linear_probe(f, y, n_classes=c, l2=lam, tol=1e-10)
    assert bool(probe.converged.all()) and float(probe.grad_norm.max()) <= 1e-10
    for i in range(3):
        ref = sklearn_linear.LogisticRegression(C=1 / (n * lam), tol=1e-12, max_iter=10_000).fit(f[i].numpy(),
                                                                                                   y[i].numpy())
        weight = torch.from_numpy(ref.coef_.T)
        bias = torch.from_numpy(ref.intercept_)
        # the objective is strongly convex in W (curvature >= lambda = 0.02), so a gradient of 1e-10 puts W
        # within 5e-9 of the optimum; sklearn's lbfgs stops on its own scaled tolerance: 1e-6 covers both
        torch.testing.assert_close(probe.weight[i], weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(probe.bias[i, 0], bias - bias.mean(), rtol=0, atol=1e-6)
        probs = torch.softmax(probe.predict(f)[i], -1)
        torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(f[i].numpy())), rtol=0, atol=1e-6)


def test_logistic_bias_is_centred_and_shared_features_broadcast() -> None:
    f, y = _classification(2, 40, 3, 3, seed=3)
    probe = linear_probe(f[0], y, n_classes=3, l2=0.1)  # features shared, labels per instance
    assert probe.weight.shape == (2, 3, 3)
    torch.testing.assert_close(probe.bias.sum(-1), torch.zeros(2, 1, dtype=torch.float64), rtol=0, atol=1e-12)
    alone = linear_probe(f[0], y[1], n_classes=3, l2=0.1)
    torch.testing.assert_close(probe.weight[1], alone.weight[0], rtol=0, atol=1e-8)


def test_probe_loads_into_a_linear_head() -> None:
    net = mlp((5,), [4], 3, instances=2, generator=_gen())
    f, y = _classification(2, 30, 4, 3, seed=4)
    probe = linear_probe(f, y, n_classes=3, l2=0.1)
    probe.load_into(net)
    h = torch.randn(2, 8, 4, generator=_gen(5))
    torch.testing.assert_close(net.head(h).double(), probe.predict(h.double()), rtol=1e-5, atol=1e-5)
    wrong = linear_probe(f[..., :3], y, n_classes=3, l2=0.1)
    with pytest.raises(ConfigError, match="shape"):
        wrong.load_into(net)


def test_probe_bad_input() -> None:
    f, y = _classification(1, 20, 3, 3)
    with pytest.raises(DataError, match="0..2"):
        linear_probe(f, y + 1, n_classes=3, l2=0.1)
    with pytest.raises(DataError, match="shape"):
        linear_probe(f, y[:, :10], n_classes=3, l2=0.1)
    with pytest.raises(ConfigError, match="l2 > 0"):
        linear_probe(f, y, n_classes=3, l2=0.0)
    with pytest.raises(ConfigError, match="l2"):
        linear_probe(f, y, n_classes=3, l2=-1.0)
    with pytest.raises(DataError, match="integers"):
        linear_probe(f, y.double(), n_classes=3, l2=0.1)
    with pytest.raises(DataError, match="floating point"):
        linear_probe(f, y, n_classes=None, l2=0.1)
    with pytest.raises(DataError, match="features"):
        linear_probe(f[0, 0], y, n_classes=3, l2=0.1)


def test_logistic_convergence_is_judged_on_the_true_gradient_of_the_original_problem() -> None:
    """The solver works in centred, scaled coordinates; its stopping test must map the gradient back
    exactly (checked against autograd of the objective in the original (W, b))."""
    from transferlab.protocols._probe import _logistic_objective

    g = torch.Generator().manual_seed(3)
    f = 30 * torch.rand(2, 60, 5, generator=g, dtype=torch.float64) + 4  # far from centred, large scale
    y = torch.randint(0, 3, (2, 60), generator=g)
    onehot = torch.nn.functional.one_hot(y, 3).double()
    lam = 1e-2
    objective, original_gradient, to_original = _logistic_objective(f, onehot, lam)
    theta = torch.randn(2, 5 * 3 + 3, generator=g, dtype=torch.float64)
    _, grad_scaled = objective(theta)
    w, b = to_original(theta)
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    z = f @ w + b
    value = (torch.logsumexp(z, -1) - (z * onehot).sum(-1)).mean(-1) + 0.5 * lam * w.pow(2).sum((1, 2))
    value.sum().backward()
    expected = torch.cat([w.grad.flatten(1), b.grad.flatten(1)], 1)
    torch.testing.assert_close(original_gradient(grad_scaled), expected, rtol=1e-10, atol=1e-12)
    fitted = linear_probe(f, y, n_classes=3, l2=lam, tol=1e-6)
    w, b = fitted.weight.clone().requires_grad_(True), fitted.bias.clone().requires_grad_(True)
    z = f @ w + b
    value = (torch.logsumexp(z, -1) - (z * onehot).sum(-1)).mean(-1) + 0.5 * lam * w.pow(2).sum((1, 2))
    value.sum().backward()
    true_norm = torch.cat([w.grad.flatten(1), b.grad.flatten(1)], 1).abs().amax(-1)
    assert bool(fitted.converged.all()) and bool((true_norm <= 1e-6).all())  # the bias is centred: same gradient
