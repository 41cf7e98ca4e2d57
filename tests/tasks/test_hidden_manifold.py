"""Correlated hidden-manifold tasks: the knobs are exact correlations, q = 1 is the identity, and the labels
and inputs have the documented statistics.

Monte-Carlo checks state n and compare against 4 standard errors (SE) of the estimate unless said otherwise;
every draw is seeded, so the tests are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from transferlab.errors import ConfigError, DataError
from transferlab.tasks import (
    HiddenManifoldTask,
    correlated_pair,
    hidden_manifold_data,
    hidden_manifold_pair,
    hidden_manifold_task,
    perturbed_task,
)
from transferlab.tasks.hidden_manifold import ACTIVATIONS

EXACT = 1e-12  # float64 rounding on sums of a few thousand terms


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def column_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))


# --------------------------------------------------------------------------------------------------
# q = 1 is the identity; the knobs are exact correlations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta_D_max", [0, -10, 7])
def test_q_one_gives_identical_tasks_and_identical_samples(delta_D_max):
    pair = correlated_pair(20, 30, 1.0, generator=gen(), delta_D_max=delta_D_max)
    assert (pair.q, pair.rho_F, pair.rho_theta, pair.delta_D) == (1.0, 1.0, 1.0, 0)
    assert torch.equal(pair.source.features, pair.target.features)
    assert torch.equal(pair.source.teacher, pair.target.teacher)
    assert pair.feature_overlap == pytest.approx(1.0, abs=EXACT)
    assert pair.teacher_overlap == pytest.approx(1.0, abs=EXACT)
    for labels in ("binary", "regression"):
        xs, ys = hidden_manifold_data(pair.source, 50, gen(3), labels=labels)
        xt, yt = hidden_manifold_data(pair.target, 50, gen(3), labels=labels)
        assert torch.equal(xs, xt) and torch.equal(ys, yt)


@pytest.mark.parametrize(("rho_F", "rho_theta"), [(0.0, 0.0), (0.3, 0.9), (0.8, -0.5), (-1.0, 1.0)])
def test_knobs_equal_the_parameter_correlations_exactly_and_preserve_norms(rho_F, rho_theta):
    pair = hidden_manifold_pair(30, 40, generator=gen(1), rho_F=rho_F, rho_theta=rho_theta)
    Fs, Ft = pair.source.features, pair.target.features
    ts, tt = pair.source.teacher, pair.target.teacher
    assert Ft.shape == Fs.shape == (30, 40) and tt.shape == (30,)
    assert torch.allclose(column_cosines(Fs, Ft), torch.full((40,), rho_F, dtype=torch.float64), rtol=0, atol=EXACT)
    assert torch.allclose(Ft.norm(dim=0), Fs.norm(dim=0), rtol=EXACT, atol=0)
    assert float(ts @ tt / (ts.norm() * tt.norm())) == pytest.approx(rho_theta, abs=EXACT)
    assert float(tt.norm()) == pytest.approx(float(ts.norm()), rel=EXACT)
    assert pair.feature_overlap == pytest.approx(rho_F, abs=EXACT)
    assert pair.teacher_overlap == pytest.approx(rho_theta, abs=EXACT)
    # every input keeps its marginal distribution: identical input moments
    for s, t in zip(pair.source.input_moments(), pair.target.input_moments()):
        assert torch.allclose(s, t, rtol=EXACT, atol=EXACT)


def test_perturbed_parameters_are_a_fresh_standard_draw():
    """Norm preservation: at rho_F = rho_theta = 1/2 the target's D * N = 20000 feature entries have mean 0
    (SE 1/sqrt(20000)) and variance 1 (SE sqrt(2/20000)), like the source's."""
    pair = hidden_manifold_pair(40, 500, generator=gen(2), rho_F=0.5, rho_theta=0.5)
    entries = pair.target.features.flatten()
    m = entries.numel()
    assert abs(float(entries.mean())) < 4 / math.sqrt(m)
    assert abs(float(entries.var()) - 1) < 4 * math.sqrt(2 / m)
    # and the target is not the source
    assert not torch.allclose(pair.target.features, pair.source.features)


def test_q_maps_to_the_three_knobs():
    pair = correlated_pair(20, 10, 0.25, generator=gen(), delta_D_max=-9)
    # (1 - 0.25) * -9 = -6.75 -> -7
    assert (pair.rho_F, pair.rho_theta, pair.delta_D, pair.q) == (0.25, 0.25, -7, 0.25)
    assert pair.target.latent_dim == 13
    # ties round away from zero: (1 - 0.5) * 5 = 2.5 -> 3, and -2.5 -> -3
    assert correlated_pair(20, 10, 0.5, generator=gen(), delta_D_max=5).delta_D == 3
    assert correlated_pair(20, 10, 0.5, generator=gen(), delta_D_max=-5).delta_D == -3
    pair0 = correlated_pair(20, 10, 0.0, generator=gen())
    assert pair0.delta_D == 0 and pair0.feature_overlap == pytest.approx(0.0, abs=EXACT)


@pytest.mark.parametrize("delta_D", [-10, 15])
def test_latent_features_added_or_deleted(delta_D):
    D, N, rho = 40, 500, 0.6
    pair = hidden_manifold_pair(D, N, generator=gen(4), rho_F=rho, rho_theta=rho, delta_D=delta_D)
    D_t, D_sh = D + delta_D, min(D, D + delta_D)
    Fs, Ft, ts, tt = pair.source.features, pair.target.features, pair.source.teacher, pair.target.teacher
    assert Ft.shape == (D_t, N) and tt.shape == (D_t,) and pair.shared_latent_dim == D_sh
    # on the shared latent coordinates the knobs are exact
    cosines = column_cosines(Fs[:D_sh], Ft[:D_sh])
    assert torch.allclose(cosines, torch.full((N,), rho, dtype=torch.float64), rtol=0, atol=EXACT)
    assert torch.allclose(Ft[:D_sh].norm(dim=0), Fs[:D_sh].norm(dim=0), rtol=EXACT)
    assert float(ts[:D_sh] @ tt[:D_sh] / (ts[:D_sh].norm() * tt[:D_sh].norm())) == pytest.approx(rho, abs=EXACT)
    # the zero-padded overlaps follow the documented exact formulas ...
    expect_F = rho * float(Fs[:D_sh].norm() ** 2 / (Fs.norm() * Ft.norm()))
    expect_t = rho * float(ts[:D_sh].norm() ** 2 / (ts.norm() * tt.norm()))
    assert pair.feature_overlap == pytest.approx(expect_F, abs=EXACT)
    assert pair.teacher_overlap == pytest.approx(expect_t, abs=EXACT)
    # ... and concentrate at rho * D_sh / sqrt(D D_t): the squared norm fraction p is Beta-distributed with
    # SD sqrt(2 p (1 - p) / (D_big N)), so sqrt(p) has SD about that / (2 sqrt(p)).
    p = D_sh / max(D, D_t)
    se = rho * math.sqrt(2 * p * (1 - p) / (max(D, D_t) * N)) / (2 * math.sqrt(p))
    assert abs(pair.feature_overlap - rho * D_sh / math.sqrt(D * D_t)) < 4 * se


def test_deletion_and_addition_at_rho_one_keep_the_shared_rows():
    source = hidden_manifold_task(12, 7, generator=gen(5))
    deleted = perturbed_task(source, generator=gen(6), delta_D=-4)
    added = perturbed_task(source, generator=gen(6), delta_D=3)
    assert torch.equal(deleted.features, source.features[:8]) and torch.equal(deleted.teacher, source.teacher[:8])
    assert torch.equal(added.features[:12], source.features) and torch.equal(added.teacher[:12], source.teacher)
    assert added.latent_dim == 15 and added.activation == source.activation


def test_teacher_knob_sets_label_agreement_on_shared_latents():
    """For the same latent c, P(y_s = y_t) = 1 - arccos(rho_theta) / pi (Gaussian orthant probability);
    n = 20000 latents, SE = sqrt(P (1 - P) / n). At rho_theta = -1 every label flips."""
    n = 20000
    for rho in (0.2, 0.7):
        pair = hidden_manifold_pair(30, 5, generator=gen(7), rho_theta=rho)
        _, ys, c = hidden_manifold_data(pair.source, n, gen(8), return_latent=True, dtype=torch.float64)
        yt = (c @ pair.target.teacher >= 0).to(torch.int64)
        P = 1 - math.acos(rho) / math.pi
        assert abs(float((ys == yt).double().mean()) - P) < 4 * math.sqrt(P * (1 - P) / n)
    flipped = hidden_manifold_pair(30, 5, generator=gen(7), rho_theta=-1.0)
    _, ys, c = hidden_manifold_data(flipped.source, 1000, gen(8), return_latent=True, dtype=torch.float64)
    assert torch.equal((c @ flipped.target.teacher >= 0).to(torch.int64), 1 - ys)


def test_common_random_numbers_across_knobs():
    """One seed: the same source for every knob value, and hidden_manifold_pair's source is hidden_manifold_task's."""
    alone = hidden_manifold_task(10, 20, generator=gen(9), activation="erf")
    for rho_F, rho_theta, delta_D in [(1.0, 1.0, 0), (0.2, 0.5, 0), (0.0, 0.0, -3), (0.5, 0.1, 4)]:
        pair = hidden_manifold_pair(10, 20, generator=gen(9), rho_F=rho_F, rho_theta=rho_theta, delta_D=delta_D,
                                    activation="erf")
        assert torch.equal(pair.source.features, alone.features) and torch.equal(pair.source.teacher, alone.teacher)
        assert pair.target.activation == "erf"
    # the same perturbation directions: two rho_F values give targets in the same 2-D plane per column
    a = hidden_manifold_pair(10, 20, generator=gen(9), rho_F=0.3)
    b = hidden_manifold_pair(10, 20, generator=gen(9), rho_F=0.6)
    perp_a = (a.target.features - 0.3 * alone.features) / math.sqrt(1 - 0.09)
    perp_b = (b.target.features - 0.6 * alone.features) / math.sqrt(1 - 0.36)
    assert torch.allclose(perp_a, perp_b, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# data: labels, inputs, shapes, determinism
# --------------------------------------------------------------------------------------------------


def test_samples_follow_the_generative_formulas():
    task = hidden_manifold_task(15, 25, generator=gen(10))
    x, y, c = hidden_manifold_data(task, 100, gen(11), return_latent=True, dtype=torch.float64)
    assert torch.allclose(x, torch.tanh(c @ task.features / math.sqrt(15)), atol=1e-14)
    assert torch.equal(y, (c @ task.teacher >= 0).to(torch.int64))
    _, ys = hidden_manifold_data(task, 100, gen(11), labels="signed", dtype=torch.float64)
    _, yr = hidden_manifold_data(task, 100, gen(11), labels="regression", dtype=torch.float64)
    assert torch.equal(ys, 2.0 * y - 1) and torch.allclose(yr, c @ task.teacher / math.sqrt(15), atol=1e-14)


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_label_balance_and_regression_variance(noise):
    """n = 20000: P(y = 1) = 1/2 (SE 0.5 / sqrt(n)); Var[y] = ||theta||^2 / D + noise^2 for regression
    (Gaussian y: SE of the sample variance = Var * sqrt(2 / (n - 1)))."""
    n = 20000
    task = hidden_manifold_task(25, 10, generator=gen(12))
    _, y = hidden_manifold_data(task, n, gen(13), noise=noise)
    assert y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1}
    assert abs(float(y.double().mean()) - 0.5) < 4 * 0.5 / math.sqrt(n)
    _, ys = hidden_manifold_data(task, n, gen(13), noise=noise, labels="signed")
    assert ys.dtype == torch.float32 and set(ys.unique().tolist()) == {-1.0, 1.0}
    _, yr = hidden_manifold_data(task, n, gen(13), noise=noise, labels="regression", dtype=torch.float64)
    var = float(task.teacher @ task.teacher) / 25 + noise**2
    assert abs(float(yr.mean())) < 4 * math.sqrt(var / n)
    assert abs(float(yr.var()) - var) < 4 * var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_input_moments_match_monte_carlo(activation):
    """n = 20000 latents, N = 30 inputs: each input's sample mean and mean square agree with
    input_moments() within 4.5 SE (the largest of 60 z-scores; SE from the sample itself)."""
    n = 20000
    task = hidden_manifold_task(20, 30, generator=gen(14), activation=activation)
    mean, var = task.input_moments()
    assert mean.shape == var.shape == (30,) and mean.dtype == torch.float64
    x, _ = hidden_manifold_data(task, n, gen(15), dtype=torch.float64)
    se_mean = x.std(0) / math.sqrt(n)
    se_sq = (x * x).std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mean).abs() <= 4.5 * se_mean + EXACT).all())
    assert bool(((x.pow(2).mean(0) - (var + mean**2)).abs() <= 4.5 * se_sq + EXACT).all())


@pytest.mark.parametrize("s", [0.1, 1.0, 3.0, 30.0])
def test_input_moment_formulas_match_adaptive_quadrature(s):
    """Every closed form (and the tanh quadrature) equals E[phi(s u)] and E[phi(s u)^2] - E^2, u ~ N(0, 1),
    computed by scipy's adaptive quadrature, to 1e-10."""
    phis = {
        "tanh": math.tanh,
        "sign": lambda z: math.copysign(1.0, z),
        "relu": lambda z: max(z, 0.0),
        "erf": math.erf,
    }
    for activation, phi in phis.items():
        task = HiddenManifoldTask(torch.full((1, 1), s, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                                  activation=activation)
        mean, var = (float(t[0]) for t in task.input_moments())

        def moment(k, phi=phi):
            def f(u):
                return phi(s * u) ** k * math.exp(-u * u / 2) / math.sqrt(2 * math.pi)

            halves = [(-40, 0), (0, 40)]  # split at the kink of sign and relu
            return sum(integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-13, limit=200)[0] for a, b in halves)

        m1 = moment(1)
        assert mean == pytest.approx(m1, abs=1e-10), activation
        assert var == pytest.approx(moment(2) - m1**2, abs=1e-10), activation


def test_instances_axis_shapes_and_independence():
    task = hidden_manifold_task(6, 9, generator=gen(16))
    x, y, c = hidden_manifold_data(task, 11, gen(17), instances=4, return_latent=True)
    assert x.shape == (4, 11, 9) and y.shape == (4, 11) and c.shape == (4, 11, 6)
    assert x.dtype == c.dtype == torch.float32 and y.dtype == torch.int64
    assert not torch.equal(x[0], x[1])
    x1, y1 = hidden_manifold_data(task, 11, gen(17))
    assert x1.shape == (11, 9) and y1.shape == (11,)
    x2, y2 = hidden_manifold_data(task, 11, gen(17), instances=1)
    assert torch.equal(x1, x2[0]) and torch.equal(y1, y2[0])  # instances=None drops the axis of instances=1


def test_determinism_generators_and_dtypes():
    task = hidden_manifold_task(8, 12, generator=gen(18))
    a = hidden_manifold_data(task, 30, gen(19), labels="regression", noise=0.1)
    b = hidden_manifold_data(task, 30, gen(19), labels="regression", noise=0.1)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    # float32 is the float64 result rounded once
    x64, y64 = hidden_manifold_data(task, 30, gen(19), labels="regression", noise=0.1, dtype=torch.float64)
    assert torch.equal(x64.float(), a[0]) and torch.equal(y64.float(), a[1])
    # x does not depend on the noise level (the noise is drawn either way)
    x0, _ = hidden_manifold_data(task, 30, gen(19), labels="regression", noise=0.0)
    assert torch.equal(x0, a[0])
    # numpy generators are accepted and deterministic too
    p1 = correlated_pair(5, 4, 0.5, generator=np.random.default_rng(0))
    p2 = correlated_pair(5, 4, 0.5, generator=np.random.default_rng(0))
    assert torch.equal(p1.target.features, p2.target.features)
    n1 = hidden_manifold_data(p1.target, 7, np.random.default_rng(1))
    n2 = hidden_manifold_data(p2.target, 7, np.random.default_rng(1))
    assert torch.equal(n1[0], n2[0]) and torch.equal(n1[1], n2[1])


# --------------------------------------------------------------------------------------------------
# bad arguments: one clear line naming the argument
# --------------------------------------------------------------------------------------------------

TASK = hidden_manifold_task(4, 3, generator=gen())

BAD_CALLS = {
    "q below 0": (lambda: correlated_pair(4, 3, -0.1, generator=gen()), "q"),
    "q above 1": (lambda: correlated_pair(4, 3, 1.5, generator=gen()), "q"),
    "q nan": (lambda: correlated_pair(4, 3, float("nan"), generator=gen()), "q"),
    "q string": (lambda: correlated_pair(4, 3, "0.5", generator=gen()), "q"),
    "negative D": (lambda: hidden_manifold_pair(-3, 3, generator=gen()), "D"),
    "D of 1": (lambda: hidden_manifold_task(1, 3, generator=gen()), "D"),
    "float D": (lambda: hidden_manifold_task(2.5, 3, generator=gen()), "D"),
    "bool N": (lambda: hidden_manifold_task(4, True, generator=gen()), "N"),
    "N of 0": (lambda: hidden_manifold_task(4, 0, generator=gen()), "N"),
    "rho_F above 1": (lambda: hidden_manifold_pair(4, 3, generator=gen(), rho_F=1.2), "rho_F"),
    "rho_theta below -1": (lambda: hidden_manifold_pair(4, 3, generator=gen(), rho_theta=-1.01), "rho_theta"),
    "delta_D leaves 1 latent": (lambda: hidden_manifold_pair(4, 3, generator=gen(), delta_D=-3), "delta_D"),
    "float delta_D": (lambda: hidden_manifold_pair(4, 3, generator=gen(), delta_D=1.0), "delta_D"),
    "delta_D_max too negative": (lambda: correlated_pair(4, 3, 0.0, generator=gen(), delta_D_max=-4), "delta_D"),
    "activation": (lambda: hidden_manifold_task(4, 3, generator=gen(), activation="softplus"), "activation"),
    "generator": (lambda: hidden_manifold_task(4, 3, generator=0), "generator"),
    "source type": (lambda: perturbed_task("task", generator=gen()), "source"),
    "n of 0": (lambda: hidden_manifold_data(TASK, 0, gen()), "n"),
    "instances of 0": (lambda: hidden_manifold_data(TASK, 5, gen(), instances=0), "instances"),
    "labels": (lambda: hidden_manifold_data(TASK, 5, gen(), labels="multiclass"), "labels"),
    "negative noise": (lambda: hidden_manifold_data(TASK, 5, gen(), noise=-0.1), "noise"),
    "infinite noise": (lambda: hidden_manifold_data(TASK, 5, gen(), noise=math.inf), "noise"),
    "dtype": (lambda: hidden_manifold_data(TASK, 5, gen(), dtype=torch.int64), "dtype"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_raise_config_error_naming_the_argument(case):
    call, name = BAD_CALLS[case]
    with pytest.raises(ConfigError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message and message.startswith(name)


@pytest.mark.parametrize(
    ("features", "teacher", "word"),
    [
        (torch.ones(3), torch.ones(3), "features"),
        (torch.ones(3, 2), torch.ones(4), "teacher"),
        (torch.ones(3, 2, dtype=torch.int64), torch.ones(3), "features"),
        (torch.full((3, 2), math.nan), torch.ones(3), "features"),
    ],
)
def test_bad_task_parameters_raise_data_error(features, teacher, word):
    with pytest.raises(DataError, match=word):
        HiddenManifoldTask(features, teacher)


def test_docs_usage_example_runs():
    """The Python block of docs/models/hidden_manifold.md runs as written and prints what it says."""
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "models" / "hidden_manifold.md"
    (code,) = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(doc), "exec"), {"__name__": "docs_example"})
    overlaps = [float(v) for v in out.getvalue().split()]
    assert overlaps == pytest.approx([0.7, 0.7], abs=EXACT)
