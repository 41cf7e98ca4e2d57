"""Shared numerical kernels: the blocked float32-screened k-NN search is exact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from transferlab.measures._geometry import knn


def brute_knn(q, ref, k, self_search):
    d = cdist(q, ref)
    if self_search:
        np.fill_diagonal(d, np.inf)
    idx = np.lexsort((np.broadcast_to(np.arange(ref.shape[0]), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


@pytest.mark.parametrize("case", ["generic", "far_clusters", "duplicates"])
def test_knn_equals_brute_force(case):
    rng = np.random.default_rng(0)
    if case == "generic":
        x = rng.standard_normal((300, 20))
    elif case == "far_clusters":  # tiny gaps at large offsets: float32 screening must fall back
        x = rng.standard_normal((400, 5)) * 1e-4 + 1e3 + np.repeat(rng.standard_normal((8, 5)) * 1e2, 50, axis=0)
    else:
        x = np.repeat(rng.standard_normal((60, 3)), 3, axis=0)
    d, i = knn(x, 4, block_elements=4096)  # small blocks: exercise the block loop
    d_ref, i_ref = brute_knn(x, x, 4, True)
    # Distances are recomputed from differences in float64: equal to cdist up to 1 ulp-ish.
    np.testing.assert_allclose(d, d_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(i, i_ref)
    y = rng.standard_normal((50, x.shape[1])) + x.mean(0)
    d, i = knn(y, 3, reference=x)
    d_ref, i_ref = brute_knn(y, x, 3, False)
    np.testing.assert_allclose(d, d_ref, rtol=1e-12)
