"""The torch arc-cosine kernel and its closed-form gradient, the closed-form population error, the
linear-transfer readout and the power-law fit of the ``fate_relu`` kind, each against an independent
reference (numpy closed forms of :mod:`transferlab.theory.relu`, finite differences, the primal ridge
problem, synthetic power laws)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.errors import DataError
from transferlab.experiments.fate_relu import (
    fit_power_law,
    linear_transfer,
    population_error,
    population_error_grad,
    relu_pair_kernel,
)
from transferlab.theory import relu


def _neurons(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape) * rng.uniform(0.2, 2.0, shape[:-1] + (1,))


def test_kernel_matches_numpy_closed_form() -> None:
    rng = np.random.default_rng(0)
    W, V = _neurons(rng, 3, 7, 5), _neurons(rng, 3, 4, 5)
    V[:, 0] = 2.5 * W[:, 0]  # parallel (u = 1) and antiparallel (u = -1) pairs
    V[:, 1] = -0.5 * W[:, 1]
    got = relu_pair_kernel(torch.tensor(W), torch.tensor(V)).numpy()
    # float64 evaluation of the same formula in two ways: agreement to rounding (1e-12 relative)
    np.testing.assert_allclose(got, relu.relu_kernel(W, V), rtol=1e-12, atol=1e-14)


def test_kernel_gradient_matches_finite_differences_including_parallel_neurons() -> None:
    rng = np.random.default_rng(1)
    W = torch.tensor(_neurons(rng, 2, 4, 3), requires_grad=True)
    V = torch.tensor(_neurons(rng, 2, 3, 3), requires_grad=True)
    assert torch.autograd.gradcheck(relu_pair_kernel, (W, V), eps=1e-6, atol=1e-7)
    # at u = 1 exactly (a neuron paired with itself) autograd through arccos would be infinite; the closed
    # form gives d/dw E[relu(w.x)^2] = d/dw ||w||^2 / 2 = w (both slots together)
    w = torch.tensor(_neurons(rng, 1, 1, 3), requires_grad=True)
    (g,) = torch.autograd.grad(relu_pair_kernel(w, w).sum(), (w,))
    torch.testing.assert_close(g, w.detach(), rtol=1e-12, atol=1e-14)


def test_population_error_is_the_norm_of_the_difference_network() -> None:
    rng = np.random.default_rng(2)
    a, W = rng.standard_normal((2, 6)), _neurons(rng, 2, 6, 4)
    b, V = rng.standard_normal((2, 3)), _neurons(rng, 2, 3, 4)
    got = population_error(*(torch.tensor(t) for t in (a, W, b, V))).numpy()
    want = relu.function_norm2(np.concatenate([a, -b], -1), np.concatenate([W, V], -2))
    np.testing.assert_allclose(got, want, rtol=1e-10)  # float64, a difference of O(1) terms


def test_linear_transfer_solves_the_primal_ridge_problem() -> None:
    rng = np.random.default_rng(3)
    I, n, m, d, ridge = 2, 9, 14, 4, 1e-2
    X, W, y = rng.standard_normal((I, n, d)), rng.standard_normal((I, m, d)), rng.standard_normal((I, n))
    c = linear_transfer(torch.tensor(W), torch.tensor(X), torch.tensor(y), ridge).numpy()
    for i in range(I):
        phi = np.maximum(X[i] @ W[i].T, 0.0) / m  # f = phi @ c
        # min (1/n)||phi c - y||^2 + ridge ||c||^2 / m  <=>  (phi^T phi / n + ridge / m I) c = phi^T y / n
        want = np.linalg.solve(phi.T @ phi / n + ridge / m * np.eye(m), phi.T @ y[i] / n)
        np.testing.assert_allclose(c[i], want, rtol=1e-8)  # two float64 solves of a conditioned system


def test_power_law_fit_exact_and_interval_covers_the_truth() -> None:
    n = [10, 20, 40, 80, 160]
    exact = fit_power_law(n, [[0.7 * v**-1.3] * 3 for v in n])
    assert exact["b"] == pytest.approx(1.3, abs=1e-12) and exact["A"] == pytest.approx(0.7, rel=1e-12)
    assert exact["b_high"] - exact["b_low"] == pytest.approx(0.0, abs=1e-12)  # no spread: a zero-width interval
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(40):  # multiplicative noise: 95% intervals should cover b = 1.3 in most of 40 draws
        samples = [list(0.7 * v**-1.3 * rng.lognormal(0.0, 0.3, 8)) for v in n]
        fit = fit_power_law(n, samples, resamples=400, seed=int(rng.integers(1 << 30)))
        covered += fit["b_low"] <= 1.3 <= fit["b_high"]
    # the percentile bootstrap with 8 instances undercovers a little; 30 of 40 is far below 95% yet far
    # above what a wrong interval (e.g. the SE of one draw) gives
    assert covered >= 30


def test_local_exponents_of_the_power_law_fit() -> None:
    """A pure power law has one local exponent everywhere; a curve that bends from n^-0.5 to n^-1.2
    (R = n^-0.5 up to n = 40, then continued as n^-1.2) has the two, by hand, in increasing n whatever
    the input order."""
    n = [10, 20, 40, 80, 160]
    pure = fit_power_law(n, [[0.7 * v**-1.3] for v in n])
    np.testing.assert_allclose(pure["local_b"], [1.3] * 4, rtol=1e-12)
    bent = {v: v**-0.5 if v <= 40 else 40**-0.5 * (v / 40) ** -1.2 for v in n}
    shuffled = [80, 10, 160, 40, 20]
    fit = fit_power_law(shuffled, [[bent[v]] for v in shuffled])
    np.testing.assert_allclose(fit["local_b"], [0.5, 0.5, 1.2, 1.2], rtol=1e-12)
    assert 0.5 < fit["b"] < 1.2  # the single fit averages the two regimes


@pytest.mark.parametrize(("n", "samples"), [([10], [[1.0]]), ([10, 10], [[1.0], [0.5]]), ([10, 20], [[1.0], []]),
                                            ([10, 20], [[1.0], [0.0]])])
def test_power_law_fit_rejects_bad_input(n: list[int], samples: list[list[float]]) -> None:
    with pytest.raises(DataError, match="power-law fit needs"):
        fit_power_law(n, samples)


def test_fused_population_gradient_matches_autograd_of_the_closed_form() -> None:
    """population_error_grad (value and gradient in one pass, used by pretraining) against autograd through
    population_error, whose kernel backward is checked against finite differences above; neurons parallel
    and antiparallel to a teacher neuron and to each other included."""
    rng = np.random.default_rng(5)
    I, m, k, d = 2, 9, 4, 6
    a, W = rng.standard_normal((I, m)), _neurons(rng, I, m, d)
    b, V = rng.standard_normal((I, k)), _neurons(rng, I, k, d)
    W[:, 0], W[:, 1], W[:, 2] = 0.3 * V[:, 0], -2.0 * V[:, 1], 1.7 * W[:, 3]
    at, Wt = torch.tensor(a, requires_grad=True), torch.tensor(W, requires_grad=True)
    bt, Vt = torch.tensor(b), torch.tensor(V)
    want = population_error(at, Wt, bt, Vt)
    want_a, want_W = torch.autograd.grad(want.sum(), (at, Wt))
    norm2 = relu.function_norm2(b, V)
    loss, got_a, got_W = population_error_grad(at.detach(), Wt.detach(), bt, Vt, torch.tensor(norm2))
    # float64, the same closed form summed in another order: agreement to rounding of O(1) terms (1e-10)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_a, want_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_W, want_W, rtol=1e-10, atol=1e-12)


def test_fused_population_gradient_in_float32_at_the_full_size() -> None:
    """At the full specification's size (d = 100, m = 1000, 50 source neurons), float32 value and gradient
    against float64, at a pretrained-like point: student neurons on the teacher's (1% jitter), readout
    balanced, so that L / ||f_s||^2 is small and the float32 cancellation is at its worst."""
    rng = np.random.default_rng(6)
    d, m, k = 100, 1000, 50
    V = rng.standard_normal((1, k, d))
    V /= np.linalg.norm(V, axis=-1, keepdims=True)
    b = np.full((1, k), 1.0 / 100)
    # about m / k student neurons on each teacher neuron, each with c_i = |w_i| = r: f ~ f_s when r^2 = b k
    W = (V[:, rng.integers(0, k, m)] + 0.01 * rng.standard_normal((1, m, d)) / np.sqrt(d)) * np.sqrt(b[0, 0] * k)
    a = np.linalg.norm(W, axis=-1) / m
    norm2 = relu.function_norm2(b[0], V[0])[None]
    exact = [t.double() for t in population_error_grad(*(torch.tensor(t) for t in (a, W, b, V, norm2)))]
    single = population_error_grad(*(torch.tensor(t, dtype=torch.float32) for t in (a, W, b, V, norm2)))
    assert 1e-4 < float(exact[0][0] / norm2[0]) < 1e-2  # a near-converged point (measured 1.5e-3)
    # the loss is a difference of O(||f_s||^2) terms: float32 rounding (6e-8 per operation, sums of m + k terms)
    # leaves an absolute error of order 1e-7 ||f_s||^2 (measured 9e-8), small against the tolerances >= 1e-5
    assert abs(float(single[0][0]) - float(exact[0][0])) < 1e-6 * norm2[0]
    for got, want in zip(single[1:], exact[1:], strict=True):  # norm-wise relative error, measured <= 7e-6
        assert float((got.double() - want).norm() / want.norm()) < 1e-4
