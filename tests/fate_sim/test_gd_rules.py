"""The opt-in gradient-descent changes of ``GDSettings``: the distance stopping rule and the warm-up.

Checked against what they promise, not against their own code: the distance rule's bound on the
distance to the minimiser (closed form, from the objective's minimum-norm solution), the warm-up as
two plain GD runs chained by hand, both through the fused and the step-by-step loop, and the
validation of the new knobs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.nets import DeepLinear
from transferlab.train import GDSettings, LeastSquaresObjective, train_gd

from .conftest import GD_INSTANCES, gd_problem, generator


def _copy(net: DeepLinear) -> DeepLinear:
    return DeepLinear.from_weights([w.detach().clone() for w in net.weights])


def _distance2(net: DeepLinear, objective: LeastSquaresObjective) -> torch.Tensor:
    """||Q beta - b*||^2 per instance: the squared distance to the minimum-norm least-squares solution
    in the row space of X, from the objective's SVD."""
    beta = net.end_to_end().detach()
    coords = (objective.basis @ beta[..., None])[..., 0]
    return ((coords - objective.target) ** 2).sum(-1)


def test_smallest_curvature_is_the_smallest_nonzero_eigenvalue_of_the_sample_covariance() -> None:
    _, objective = gd_problem(16)  # n < d: X^T X / n has d - n zero eigenvalues, which must be skipped
    X = objective.X
    for i in range(GD_INSTANCES):
        eig = torch.linalg.eigvalsh(X[i].T @ X[i] / X.shape[1])
        expected = eig[eig > 1e-10 * eig.max()].min()
        assert abs(float(objective.smallest_curvature[i]) / float(expected) - 1) < 1e-10


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("n", [20, 30])  # n near d: A is ill-conditioned, the case the rule is for
def test_distance_rule_bounds_the_distance_to_the_minimiser(fused: bool, n: int) -> None:
    tol = 1e-6
    net, objective = gd_problem(n)
    excess_net, distance_net = _copy(net), _copy(net)
    res_excess = train_gd(excess_net, objective, GDSettings(tol=tol, max_steps=200_000, fused=fused))
    res_distance = train_gd(distance_net, objective, GDSettings(tol=tol, max_steps=200_000, stop_rule="distance",
                                                                fused=fused))
    assert bool(res_excess.converged.all()) and bool(res_distance.converged.all())
    assert bool((_distance2(distance_net, objective) <= tol).all())  # the promise
    # the excess rule stops too early in the slow directions: its distance exceeds tol (why the rule exists)
    assert bool((_distance2(excess_net, objective) > tol).any())
    assert bool((res_distance.steps >= res_excess.steps).all())
    threshold = tol * objective.smallest_curvature
    assert bool((res_distance.excess <= threshold).all())


@pytest.mark.parametrize("fused", [True, False])
def test_warmup_equals_two_chained_runs(fused: bool) -> None:
    """K steps at factor * lr, then the rest at lr, is what two plain GD runs chained by hand do."""
    net, objective = gd_problem(40)
    lr, warm, factor = 0.05, 37, 0.25  # 37: not a multiple of the fused block length
    one = _copy(net)
    result = train_gd(one, objective, GDSettings(lr=lr, warmup_steps=warm, warmup_factor=factor, tol=1e-8,
                                                 max_steps=5000, fused=fused))
    two = _copy(net)
    first = train_gd(two, objective, GDSettings(lr=lr * factor, tol=0.0, max_steps=warm, fused=fused))
    second = train_gd(two, objective, GDSettings(lr=lr, tol=1e-8, max_steps=5000 - warm, fused=fused))
    assert int(first.steps.min()) == warm  # nothing stopped during the warm-up
    assert torch.equal(result.steps, first.steps + second.steps)  # integers: exact
    assert torch.equal(result.converged, second.converged)
    for a, b in zip(one.weights, two.weights, strict=True):
        # float64, the same steps in another grouping: rounding only
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12


def test_warmup_with_weight_decay_fused_equals_step_by_step() -> None:
    """The fused loop's weight-decay bookkeeping of the null space follows the per-step warm-up sizes."""
    net, objective = gd_problem(10)  # n < d: a null-space part that only weight decay moves
    settings = dict(lr=0.05, warmup_steps=80, warmup_factor=0.1, weight_decay=0.05, tol=1e-7, max_steps=3000)
    fused, plain = _copy(net), _copy(net)
    res_fused = train_gd(fused, objective, GDSettings(**settings))
    res_plain = train_gd(plain, objective, GDSettings(**settings, fused=False))
    assert torch.equal(res_fused.steps, res_plain.steps)
    for a, b in zip(fused.weights, plain.weights, strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12


@pytest.mark.parametrize(("knob", "value"), [("stop_rule", "loss"), ("warmup_steps", -1), ("warmup_factor", 0.0),
                                             ("warmup_factor", 1.5)])
def test_bad_knobs_are_refused(knob: str, value) -> None:
    with pytest.raises(ConfigError, match=knob):
        GDSettings(**{knob: value})


def test_simulate_fate_passes_the_fixes_to_the_right_phases() -> None:
    """``stop_rule`` reaches every phase, ``finetune_warmup`` fine-tuning only."""
    from transferlab.protocols import simulate_fate

    def run(**knobs):
        return simulate_fate(d=16, n=12, layers=2, thetas=[0.6], sigmas=[0.2], instances=3,
                             generators=[generator(5)], return_training=True, **knobs)

    (plain, plain_training), (fixed, fixed_training) = run(), run(stop_rule="distance", finetune_warmup=50)
    # scratch differs only by the stopping rule: it stops later, never earlier
    assert bool((fixed_training["scratch"].steps >= plain_training["scratch"].steps).all())
    warm_only, warm_training = run(finetune_warmup=50)
    assert torch.equal(warm_training["scratch"].steps, plain_training["scratch"].steps)
    np.testing.assert_allclose(warm_only["scratch"], plain["scratch"], rtol=1e-12)  # the same computation
    assert not torch.equal(warm_training["finetune"].steps, plain_training["finetune"].steps)
    with pytest.raises(ConfigError, match="stop_rule"):
        run(stop_rule="loss")
