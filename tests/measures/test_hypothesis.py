"""Bounded property-based checks (hypothesis, few examples): fast == slow and metric axioms on
random shapes and scales."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.measures import (
    LinearCKAAccumulator,
    cka_similarity,
    procrustes_distance,
    wasserstein_distance,
)

shapes = st.tuples(st.integers(5, 40), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1))


@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(1e-3, 1e3), st.booleans())
def test_cka_forms_agree(shape, scale, debiased):
    n, p, q, seed = shape
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((n, p)) + 10.0
    y = np.hstack([x[:, :1], rng.standard_normal((n, q))])
    fast = cka_similarity(x, y, debiased=debiased, method="feature")
    slow = cka_similarity(x, y, debiased=debiased, method="gram")
    acc = LinearCKAAccumulator()
    for part in np.array_split(np.arange(n), 3):
        acc.update(x[part], y[part])
    # Same algebra, different summation order; 1e-8 covers the translated (offset 10) inputs.
    assert abs(fast - slow) <= 1e-8 and abs(acc.cka(debiased=debiased) - fast) <= 1e-8
    if not debiased:
        assert -1e-12 <= fast <= 1 + 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 25), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_triangle_inequality_random_shapes(n, d, seed):
    rng = np.random.default_rng(seed)
    a, b, c = (rng.standard_normal((n, d)) * rng.uniform(0.1, 3) for _ in range(3))
    for dist in (procrustes_distance, wasserstein_distance):
        assert dist(a, c) <= dist(a, b) + dist(b, c) + 1e-9
