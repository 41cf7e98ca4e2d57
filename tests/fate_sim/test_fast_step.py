"""The fused two-layer GD loop (``GDSettings(fused=True)``, the default for L = 2) against the
step-by-step loop it replaces (``fused=False``, the old formulation): the same GD, the same stopping
rule, the same step counts and, up to floating-point rounding, the same weights."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import transferlab.protocols.fate as fate_protocols
import transferlab.train.gd as gd
from transferlab.nets import DeepLinear
from transferlab.protocols import simulate_fate
from transferlab.train import GDSettings, LeastSquaresObjective, train_gd

from .conftest import GD_INSTANCES, gd_problem, generator


def _both(net: DeepLinear, objective: LeastSquaresObjective, **settings):
    old, new = DeepLinear.from_weights(list(net.weights)), DeepLinear.from_weights(list(net.weights))
    result_old = train_gd(old, objective, GDSettings(**settings, fused=False))
    result_new = train_gd(new, objective, GDSettings(**settings))
    return (old, result_old), (new, result_new)


def _assert_same_training(old, new) -> None:
    (net_old, res_old), (net_new, res_new) = old, new
    assert torch.equal(res_old.steps, res_new.steps)  # integers: exact
    assert torch.equal(res_old.converged, res_new.converged)
    for a, b in zip(net_old.weights, net_new.weights, strict=True):
        # float64, a few hundred steps of the same arithmetic in another order: rounding only (~1e-15
        # per step, not amplified: measured <= 8e-16 relative)
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12
    torch.testing.assert_close(res_new.excess, res_old.excess, rtol=1e-9, atol=1e-15)


# n < d/2 (hidden-space reduction), n < d (row space only), n > d (full), population
@pytest.mark.parametrize("n", [8, 20, 40, "population"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_loop_equals_step_by_step_loop(n, weight_decay: float) -> None:
    """Blocks of 7 steps (max_steps = 400 is no multiple of 7); the instances stop at different
    steps in different blocks, some never (they exhaust max_steps)."""
    net, objective = gd_problem(n)
    # tol = the median excess after 150 plain steps (midway between the two middle instances, so no
    # instance sits on the threshold to rounding): about half the instances stop by then
    probe = train_gd(DeepLinear.from_weights(list(net.weights)), objective,
                     GDSettings(lr=0.05, max_steps=150, tol=0.0, weight_decay=weight_decay, fused=False))
    tol = float(torch.quantile(probe.excess, 0.5))
    old, new = _both(net, objective, lr=0.05, max_steps=400, tol=tol, weight_decay=weight_decay, check_every=7)
    _assert_same_training(old, new)
    steps = new[1].steps
    assert len(set(steps.tolist())) > 1  # the instances did stop at different steps
    assert bool((steps < 400).any())


@pytest.mark.parametrize("n", [8, 40, "population"])
def test_deferred_kernel_equals_step_by_step_loop(n, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deferred rank-one updates (used from r * k >= _DEFER_MIN_SIZE, here forced on small cells)."""
    monkeypatch.setattr(gd, "_DEFER_MIN_SIZE", 0)
    net, objective = gd_problem(n, seed=3)
    old, new = _both(net, objective, lr=0.05, max_steps=300, tol=1e-5, check_every=16)
    _assert_same_training(old, new)


def test_stopping_rule_from_its_definition() -> None:
    """An instance stopped after t updates has excess <= tol after exactly t unstopped updates and
    excess > tol after t - 1 (the rule: stop at the first step whose excess is <= tol)."""
    net, objective = gd_problem(40, seed=5)
    trained = DeepLinear.from_weights(list(net.weights))
    result = train_gd(trained, objective, GDSettings(lr=0.05, max_steps=400, tol=1e-5, check_every=9))
    assert int(result.converged.sum()) >= 3 and bool((result.steps > 0).all())
    for i in range(GD_INSTANCES):
        t = int(result.steps[i])
        single = LeastSquaresObjective(minimum=objective.minimum[i:i + 1], eigenvalues=objective.eigenvalues[i:i + 1],
                                       target=objective.target[i:i + 1], basis=objective.basis[i:i + 1],
                                       X=objective.X[i:i + 1], y=objective.y[i:i + 1])
        checks = ((t, True), (t - 1, False)) if bool(result.converged[i]) else ((t, False),)
        for count, below in checks:
            copy = DeepLinear.from_weights([w[i:i + 1] for w in net.weights])
            plain = train_gd(copy, single, GDSettings(lr=0.05, max_steps=count, tol=0.0))
            assert bool(plain.excess[0] <= 1e-5) == below, (i, t, count, float(plain.excess[0]))
        copy = DeepLinear.from_weights([w[i:i + 1] for w in net.weights])
        train_gd(copy, single, GDSettings(lr=0.05, max_steps=t, tol=0.0))
        for a, b in zip(copy.weights, trained.weights, strict=True):
            assert ((a[0] - b[i]).abs().max() / b[i].abs().max()).item() < 1e-12  # rounding only


def test_zero_steps_and_already_converged_instances() -> None:
    net, objective = gd_problem(40)
    copy = DeepLinear.from_weights(list(net.weights))
    result = train_gd(copy, objective, GDSettings(max_steps=0))
    assert torch.equal(result.steps, torch.zeros(GD_INSTANCES, dtype=torch.int64))
    for a, b in zip(copy.weights, net.weights, strict=True):
        # no update: only the change to reduced coordinates and back (Q^T Q W_1 + null part) rounds
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-13
    huge_tol = train_gd(DeepLinear.from_weights(list(net.weights)), objective, GDSettings(tol=1e9))
    assert torch.equal(huge_tol.steps, torch.zeros(GD_INSTANCES, dtype=torch.int64))
    assert bool(huge_tol.converged.all())


def test_simulate_fate_fused_equals_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole protocols on small cells (population and finite source): risks and step counts agree."""
    kwargs = dict(d=30, n=12, layers=2, thetas=np.array([math.pi / 8, math.pi / 3]), sigmas=np.array([0.0, 0.2]),
                  instances=4, return_training=True)
    for source_n in (None, 45):
        new, new_training = simulate_fate(generators=[generator(20), generator(21)], source_n=source_n, **kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(fate_protocols, "GDSettings", functools.partial(GDSettings, fused=False))
            old, old_training = simulate_fate(generators=[generator(20), generator(21)], source_n=source_n, **kwargs)
        for protocol in new:
            # float64 risks of order 0.1-1 after identical GD up to rounding
            np.testing.assert_allclose(new[protocol], old[protocol], rtol=1e-9, atol=1e-12)
        for phase in new_training:
            assert torch.equal(new_training[phase].steps, old_training[phase].steps)


@pytest.mark.parametrize("n", [8, 40, "population"])
def test_fused_loop_in_float32(n) -> None:
    """float32 (the d = 500 spec's precision): the same stops, weights equal to float32 rounding."""
    net64, objective64 = gd_problem(n, seed=7)
    net = DeepLinear.from_weights([w.detach().float() for w in net64.weights])
    if n == "population":
        objective = LeastSquaresObjective.population(objective64.target.float())
    else:
        objective = LeastSquaresObjective.empirical(objective64.X.float(), objective64.y.float())
    probe = train_gd(DeepLinear.from_weights(list(net.weights)), objective,
                     GDSettings(lr=0.05, max_steps=40, tol=0.0, fused=False))
    tol = float(torch.quantile(probe.excess, 0.5))  # midway between two instances, as above
    assert tol > 1e-8  # far above float32's rounding floor of the excess (~1e-14 here), so stops are not noise
    (net_old, res_old), (net_new, res_new) = _both(net, objective, lr=0.05, max_steps=400, tol=tol, check_every=7)
    assert torch.equal(res_old.steps, res_new.steps)
    for a, b in zip(net_old.weights, net_new.weights, strict=True):
        # float32: eps 6e-8 per operation over <= 400 steps (measured <= 2e-7 relative)
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-4
