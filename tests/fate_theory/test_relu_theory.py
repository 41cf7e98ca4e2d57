"""ReLU closed forms (transferlab.theory.relu): arc-cosine kernel, Gram matrices, out-of-RKHS norms.

Monte-Carlo checks use n = 200,000 Gaussian inputs from a fixed seed and accept |estimate - theory|
<= 4 standard errors (SE = sample std / sqrt(n)); deterministic identities use stated float tolerances.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from transferlab.errors import ConfigError, DataError
from transferlab.theory import relu

N_MC = 200_000
PI = np.pi


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _within_4_se(samples: np.ndarray, theory: float) -> None:
    mean, se = float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(samples.size))
    assert abs(mean - theory) <= max(4.0 * se, 1e-15), (mean, theory, se)


def _unit_rows(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    g = rng.standard_normal((m, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# kernel


def test_arccos_kernel_special_values() -> None:
    k = relu.arccos_kernel([-1.0, 0.0, 1.0])
    assert k.dtype == np.float64 and k.shape == (3,)
    assert k[0] == pytest.approx(0.0, abs=1e-15)  # antipodal neurons never fire together
    assert k[1] == pytest.approx(1 / (2 * PI), abs=1e-15)  # E[relu(z)]^2 for independent z
    assert k[2] == pytest.approx(0.5, abs=1e-15)  # E[relu(z)^2] = 1/2
    assert relu.arccos_kernel(0.3).shape == ()


def test_arccos_kernel_increasing_convex_and_clipped_at_rounding() -> None:
    u = np.linspace(-1, 1, 401)
    k = relu.arccos_kernel(u)
    assert np.all(np.diff(k) > 0) and np.all(np.diff(k, 2) > -1e-15)
    assert float(relu.arccos_kernel(1 + 1e-13)) == pytest.approx(0.5, abs=1e-15)
    assert float(relu.arccos_kernel(-1 - 1e-13)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("u", [-1.0, -0.6, 0.0, 0.3, 0.8, 1.0])
def test_arccos_kernel_matches_monte_carlo(u: float) -> None:
    x = np.random.default_rng(12).standard_normal((N_MC, 3))
    w = np.array([1.0, 0.0, 0.0])
    v = np.array([u, np.sqrt(max(0.0, 1 - u * u)), 0.0])
    _within_4_se(_relu(x @ w) * _relu(x @ v), float(relu.arccos_kernel(u)))


def test_relu_kernel_general_norms_zero_rows_and_broadcasting() -> None:
    rng = np.random.default_rng(1)
    W, V = rng.standard_normal((4, 5)) * 3, rng.standard_normal((3, 5)) * 0.5
    nw, nv = np.linalg.norm(W, axis=1), np.linalg.norm(V, axis=1)
    expected = np.outer(nw, nv) * relu.arccos_kernel((W @ V.T) / np.outer(nw, nv))
    K = relu.relu_kernel(W, V)
    assert K.shape == (4, 3) and np.allclose(K, expected, rtol=1e-13, atol=0)
    W0 = W.copy()
    W0[1] = 0.0  # a dead neuron
    assert np.all(relu.relu_kernel(W0, V)[1] == 0.0)
    batched = relu.relu_kernel(np.stack([W, 2 * W]), V)  # (2, 4, 5) with (3, 5)
    assert batched.shape == (2, 4, 3) and np.allclose(batched[1], 2 * K, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.standard_normal((30, 6)) * rng.uniform(0.1, 3, (30, 1)),  # general norms
        lambda rng: np.repeat(_unit_rows(rng, 5, 4), 3, axis=0),  # repeated neurons: singular
        lambda rng: np.concatenate([np.eye(4), -np.eye(4), np.ones((1, 4)) / 2]),  # antipodal pairs: singular
        lambda rng: _unit_rows(rng, 200, 3),  # many neurons in low d: ill-conditioned
    ],
)
def test_gram_symmetric_psd_with_exact_diagonal(make: Callable[[np.random.Generator], np.ndarray]) -> None:
    W = make(np.random.default_rng(2))
    G = relu.relu_gram(W)
    assert np.array_equal(G, G.T)
    assert np.array_equal(np.diag(G), 0.5 * np.sum(W * W, axis=1))
    assert np.linalg.eigvalsh(G).min() >= -1e-12


# --------------------------------------------------------------------------------------------------
# networks


def test_function_inner_matches_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    d = 6
    a, W = rng.standard_normal(3), rng.standard_normal((3, d)) * rng.uniform(0.5, 2, (3, 1))
    b, V = rng.standard_normal(4), rng.standard_normal((4, d))
    x = np.random.default_rng(4).standard_normal((N_MC, d))
    f, g = _relu(x @ W.T) @ a, _relu(x @ V.T) @ b
    _within_4_se(f * g, float(relu.function_inner(a, W, b, V)))
    _within_4_se(f * f, float(relu.function_norm2(a, W)))


def test_function_norm2_is_self_inner_and_batches() -> None:
    rng = np.random.default_rng(5)
    a, W = rng.standard_normal((2, 7)), rng.standard_normal((2, 7, 4))
    norms = relu.function_norm2(a, W)
    assert norms.shape == (2,)
    for i in range(2):
        assert norms[i] == pytest.approx(float(relu.function_inner(a[i], W[i], a[i], W[i])), rel=1e-13)
    # mean-field student (1/m) sum c_i relu(w_i.x) is a = c/m: the norm scales by 1/m^2
    assert float(relu.function_norm2(a[0] / 7, W[0])) == pytest.approx(norms[0] / 49, rel=1e-13)


# --------------------------------------------------------------------------------------------------
# projection on the source span


def _pair(mu: float, seed: int = 0, d: int = 20, m_star: int = 30, weights: str = "uniform") -> relu.ReluTeacherPair:
    return relu.relu_teacher_pair(d, m_star, mu, np.random.default_rng(seed), weights)  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", ["uniform", "sign"])
def test_residual_zero_at_mu_0_and_full_norm_at_mu_1(weights: str) -> None:
    p0, p1 = _pair(0.0, weights=weights), _pair(1.0, weights=weights)
    f2 = float(relu.function_norm2(p0.target_weights, p0.target_neurons))
    assert float(relu.out_of_rkhs_norm2(p0.target_weights, p0.target_neurons, p0.source_neurons)) <= 1e-12 * f2
    assert p1.source_neurons.shape == (0, 20)
    assert float(relu.out_of_rkhs_norm2(p1.target_weights, p1.target_neurons, p1.source_neurons)) == f2
    assert float(relu.out_of_rkhs_fraction(p1.target_weights, p1.target_neurons, p1.source_neurons)) == 1.0


@pytest.mark.parametrize("weights", ["uniform", "sign"])
def test_residual_non_decreasing_in_mu_for_nested_sources_and_bounded(weights: str) -> None:
    mus = np.linspace(0, 1, 11)
    pairs = [_pair(mu, seed=7, weights=weights) for mu in mus]
    for smaller, larger in zip(pairs, pairs[1:], strict=False):  # same seed: nested removals
        assert set(smaller.removed) <= set(larger.removed)
    res = np.array([float(relu.out_of_rkhs_norm2(p.target_weights, p.target_neurons, p.source_neurons)) for p in pairs])
    f2 = float(relu.function_norm2(pairs[0].target_weights, pairs[0].target_neurons))
    assert np.all(np.diff(res) >= -1e-12 * f2)
    assert res[5] > 0 and np.all(res >= 0) and np.all(res <= f2)


def test_projection_is_orthogonal_and_residual_is_its_norm() -> None:
    p = _pair(0.4, seed=3)
    c = relu.source_span_projection(p.target_weights, p.target_neurons, p.source_neurons)
    res = float(relu.out_of_rkhs_norm2(p.target_weights, p.target_neurons, p.source_neurons))
    # residual function r = f_t - sum_j c_j relu(w_sj.x), as one network on the stacked neurons
    a_r = np.concatenate([p.target_weights, -c])
    W_r = np.concatenate([p.target_neurons, p.source_neurons])
    f2 = float(relu.function_norm2(p.target_weights, p.target_neurons))
    assert float(relu.function_norm2(a_r, W_r)) == pytest.approx(res, abs=1e-12 * f2)
    # <r, relu(w_sj . x)> = 0 for every source neuron
    inner = relu.relu_kernel(p.source_neurons, W_r) @ a_r
    assert np.max(np.abs(inner)) <= 1e-12 * f2


def test_orthogonal_source_span_leaves_full_norm() -> None:
    rng = np.random.default_rng(8)
    w = _unit_rows(rng, 1, 5)
    a = np.array([0.7])
    f2 = float(relu.function_norm2(a, w))
    assert f2 == pytest.approx(0.49 / 2, rel=1e-15)
    # relu(-w.x) is orthogonal to relu(w.x): k(-1) = 0
    assert float(relu.out_of_rkhs_norm2(a, w, -w)) == pytest.approx(f2, rel=1e-14)
    assert float(relu.out_of_rkhs_norm2(a, w, np.concatenate([-w, 3 * w]))) <= 1e-15


def test_invariant_to_permuting_and_duplicating_source_neurons() -> None:
    p = _pair(0.5, seed=4)
    args = (p.target_weights, p.target_neurons)
    base = float(relu.out_of_rkhs_norm2(*args, p.source_neurons))
    perm = np.random.default_rng(9).permutation(len(p.source_neurons))
    assert float(relu.out_of_rkhs_norm2(*args, p.source_neurons[perm])) == pytest.approx(base, rel=1e-10)
    # a repeated neuron adds nothing to the span (singular Gram matrix: the pseudo-inverse handles it)
    doubled = np.concatenate([p.source_neurons, p.source_neurons[:5], 2.0 * p.source_neurons[5:8]])
    assert float(relu.out_of_rkhs_norm2(*args, doubled)) == pytest.approx(base, rel=1e-8)
    # the source output weights play no role; the target's neuron order does not either
    tperm = np.random.default_rng(10).permutation(len(p.target_weights))
    moved = float(relu.out_of_rkhs_norm2(p.target_weights[tperm], p.target_neurons[tperm], p.source_neurons))
    assert moved == pytest.approx(base, rel=1e-10)


def test_projection_batches_over_leading_axes() -> None:
    pairs = [_pair(0.3, seed=s) for s in range(3)]
    a = np.stack([p.target_weights for p in pairs])
    Wt, Ws = np.stack([p.target_neurons for p in pairs]), np.stack([p.source_neurons for p in pairs])
    out = relu.out_of_rkhs_norm2(a, Wt, Ws)
    frac = relu.out_of_rkhs_fraction(a, Wt, Ws)
    assert out.shape == frac.shape == (3,)
    for i, p in enumerate(pairs):
        one = float(relu.out_of_rkhs_norm2(p.target_weights, p.target_neurons, p.source_neurons))
        assert out[i] == pytest.approx(one, rel=1e-12)
        assert frac[i] == pytest.approx(one / float(relu.function_norm2(p.target_weights, p.target_neurons)), rel=1e-12)


def test_out_of_rkhs_norm_matches_monte_carlo_regression() -> None:
    """Least squares of f_t on the source features over n = 200k draws: residual MSE within 4 SE of theory."""
    p = _pair(0.5, seed=11, d=8, m_star=12, weights="sign")
    x = np.random.default_rng(12).standard_normal((N_MC, 8))
    c = relu.source_span_projection(p.target_weights, p.target_neurons, p.source_neurons)
    r = _relu(x @ p.target_neurons.T) @ p.target_weights - _relu(x @ p.source_neurons.T) @ c
    _within_4_se(r * r, float(relu.out_of_rkhs_norm2(p.target_weights, p.target_neurons, p.source_neurons)))


# --------------------------------------------------------------------------------------------------
# teachers


def test_relu_teacher_pair_construction() -> None:
    p = relu.relu_teacher_pair(9, 10, 0.25, np.random.default_rng(0))
    assert p.target_neurons.shape == (10, 9) and p.target_weights.shape == (10,)
    assert np.allclose(np.linalg.norm(p.target_neurons, axis=1), 1.0, rtol=0, atol=1e-14)
    assert np.all(p.target_weights == 0.1)
    assert len(p.removed) == 3 and len(p.kept) == 7  # round(2.5) = 3: round half up
    assert sorted([*p.kept, *p.removed]) == list(range(10)) and np.all(np.diff(p.kept) > 0)
    assert np.array_equal(p.source_neurons, p.target_neurons[p.kept])
    assert np.array_equal(p.source_weights, p.target_weights[p.kept])
    q = relu.relu_teacher_pair(9, 10, 0.25, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip(p, q, strict=True))  # seeded
    s = relu.relu_teacher_pair(9, 1000, 0.0, np.random.default_rng(1), "sign")
    assert set(np.unique(s.target_weights)) == {-1e-3, 1e-3} and abs(np.mean(s.target_weights > 0) - 0.5) < 0.06


# --------------------------------------------------------------------------------------------------
# invalid input

W3 = np.eye(3)
BAD: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "u_outside": (lambda: relu.arccos_kernel([0.5, 1.001]), ConfigError, "u must be a cosine"),
    "u_nan": (lambda: relu.arccos_kernel(np.nan), ConfigError, "u must be finite"),
    "kernel_1d": (lambda: relu.relu_kernel(np.ones(3), W3), DataError, "W must have shape"),
    "kernel_dims": (lambda: relu.relu_kernel(W3, np.ones((2, 4))), DataError, "same input dimension"),
    "gram_inf": (lambda: relu.relu_gram(np.full((2, 2), np.inf)), DataError, "W must be finite"),
    "inner_m": (lambda: relu.function_inner(np.ones(2), W3, np.ones(3), W3), DataError, "a must have shape"),
    "norm_text": (lambda: relu.function_norm2("x", W3), DataError, "a must be real"),
    "proj_dims": (lambda: relu.out_of_rkhs_norm2(np.ones(3), W3, np.ones((2, 4))), DataError, "same input dimension"),
    "proj_rcond": (lambda: relu.out_of_rkhs_norm2(np.ones(3), W3, W3, rcond=2.0), ConfigError, "rcond"),
    "fraction_zero": (lambda: relu.out_of_rkhs_fraction(np.zeros(3), W3, W3), DataError, "zero function"),
    "pair_mu": (lambda: relu.relu_teacher_pair(5, 10, 1.5, np.random.default_rng(0)), ConfigError, "mu must"),
    "pair_d": (lambda: relu.relu_teacher_pair(0, 10, 0.5, np.random.default_rng(0)), ConfigError, "d must"),
    "pair_m": (
        lambda: relu.relu_teacher_pair(5, 2.0, 0.5, np.random.default_rng(0)),  # type: ignore[arg-type]
        ConfigError,
        "m_star",
    ),
    "pair_gen": (lambda: relu.relu_teacher_pair(5, 10, 0.5, 0), ConfigError, "generator"),  # type: ignore[arg-type]
    "pair_weights": (
        lambda: relu.relu_teacher_pair(5, 10, 0.5, np.random.default_rng(0), "gauss"),  # type: ignore[arg-type]
        ConfigError,
        "output_weights",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_one_clear_error(name: str) -> None:
    call, error, message = BAD[name]
    with pytest.raises(error, match=message):
        call()
