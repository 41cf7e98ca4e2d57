"""The GD trainer: the fast end-to-end path equals the autograd reference; stopping; divergence."""

from __future__ import annotations

import pytest
import torch

from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets import DeepLinear
from transferlab.tasks import linear_regression_data, teacher_pair
from transferlab.train import GDSettings, LeastSquaresObjective, train_gd

from .conftest import generator

D = 40


def _problem(n: int, layers: int, instances: int = 3, seed: int = 0):
    g = generator(seed)
    pair = teacher_pair(D, 0.5, g)
    X, y = linear_regression_data(pair.beta_t, n, 0.3, g, instances)
    net = DeepLinear(D, layers, instances, init_scale=0.3, generator=g)
    return pair, X, y, net


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("n", [15, 30, 90, "population"])  # n < d/2 (hidden reduction), n < d, n > d
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_end_to_end_gradient_path_equals_autograd(layers: int, n, weight_decay: float) -> None:
    """200 GD steps in float64: weights agree to 1e-12 relative (rounding only)."""
    pair, X, y, net = _problem(30 if n == "population" else n, layers)
    objective = (LeastSquaresObjective.population(pair.beta_s.expand(3, D).clone()) if n == "population"
                 else LeastSquaresObjective.empirical(X, y))
    fast, slow = DeepLinear.from_weights(list(net.weights)), DeepLinear.from_weights(list(net.weights))
    settings = dict(lr=0.02, max_steps=200, tol=0.0, weight_decay=weight_decay)
    result_fast = train_gd(fast, objective, GDSettings(**settings))
    result_slow = train_gd(slow, objective, GDSettings(**settings, gradient="autograd"))
    for a, b in zip(fast.weights, slow.weights, strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12
    torch.testing.assert_close(result_fast.excess, result_slow.excess, rtol=1e-9, atol=1e-14)
    assert torch.equal(result_fast.steps, torch.full((3,), 200))


def test_stopping_rule_reaches_least_squares_minimum_plus_tol() -> None:
    """n > d with noise: the minimum is > 0; every instance stops at excess <= tol."""
    _, X, y, net = _problem(80, 2)
    objective = LeastSquaresObjective.empirical(X, y)
    assert bool((objective.minimum > 0.01).all())
    result = train_gd(net, objective, GDSettings(tol=1e-6))
    assert bool(result.converged.all()) and bool((result.excess <= 1e-6).all())
    mse = ((net(X) - y) ** 2).mean(-1)
    assert bool((mse - objective.minimum <= 1.01e-6).all())
    beta_ls = torch.linalg.lstsq(X, y[..., None]).solution[..., 0]
    assert (net.end_to_end() - beta_ls).norm(dim=-1).max().item() < 1e-2
    assert bool((result.steps > 0).all()) and bool((result.steps < 20_000).all())


def test_instances_stop_independently() -> None:
    """A converged instance freezes; others keep going (per-instance masks)."""
    _, X, y, net = _problem(15, 2, instances=2)
    objective = LeastSquaresObjective.empirical(X, y)
    settings = GDSettings(tol=1e-4)
    result = train_gd(net, objective, settings)
    first = DeepLinear.from_weights([w[:1] for w in _problem(15, 2, instances=2)[3].weights])
    alone = train_gd(first, LeastSquaresObjective.empirical(X[:1], y[:1]), settings)
    assert result.steps[0] == alone.steps[0]
    torch.testing.assert_close(net.weights[0][:1].detach(), first.weights[0].detach(), rtol=0, atol=1e-13)


def test_float32_training_converges() -> None:
    _, X, y, net = _problem(25, 2)
    net32 = DeepLinear.from_weights([w.detach().float() for w in net.weights])
    result = train_gd(net32, LeastSquaresObjective.empirical(X.float(), y.float()), GDSettings(tol=1e-6))
    assert bool(result.converged.all())
    assert net32.end_to_end().dtype == torch.float32


def test_divergence_raises() -> None:
    _, X, y, net = _problem(60, 2)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train_gd(net, LeastSquaresObjective.empirical(X, y), GDSettings(lr=5.0, max_steps=500))


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"lr": float("nan")}, {"max_steps": -1}, {"tol": -1.0}, {"weight_decay": -0.1},
     {"gradient": "numeric"}, {"check_every": 0}],
)
def test_bad_settings(kwargs) -> None:
    with pytest.raises(ConfigError):
        GDSettings(**kwargs)


def test_bad_objectives_and_mismatches() -> None:
    _, X, y, net = _problem(20, 2)
    with pytest.raises(DataError):
        LeastSquaresObjective.empirical(X, y[:, :5])
    with pytest.raises(DataError):
        LeastSquaresObjective.empirical(X, y.float())
    bad = X.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(DataError):
        LeastSquaresObjective.empirical(bad, y)
    with pytest.raises(DataError):
        LeastSquaresObjective.population(torch.ones(5))
    with pytest.raises(DataError):
        train_gd(net, LeastSquaresObjective.empirical(X[:2], y[:2]))


@pytest.mark.parametrize("init_scale", [1e10, 3.0])
def test_divergence_from_a_large_init_names_the_init_scale(init_scale) -> None:
    """The automatic step size is stable for small inits; a large one used to be told to lower the
    learning rate, which was never the problem."""
    pair, X, y, _ = _problem(60, 2)
    net = DeepLinear(D, 2, 3, init_scale=init_scale, generator=generator(1))
    with pytest.raises(TrainingDiverged, match=r"lower the init scale \(P = .* at the start") as caught:
        train_gd(net, LeastSquaresObjective.empirical(X, y), GDSettings(max_steps=500))
    assert "learning rate" not in str(caught.value)
