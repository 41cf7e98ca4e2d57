"""Intrinsic dimension: known manifolds within Monte-Carlo tolerances, duplicates, profiles."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from transferlab.errors import DataError
from transferlab.measures import mle_dimension, twonn_dimension, twonn_profile


def flat_torus(rng, n, d):
    """Uniform points on the flat d-torus embedded in R^{2d}: locally uniform, no boundary."""
    t = rng.uniform(0, 2 * np.pi, (n, d))
    return np.hstack([np.cos(t), np.sin(t)])


@pytest.mark.parametrize("d", [2, 4])
@pytest.mark.parametrize("method", ["lsq", "mle"])
def test_twonn_recovers_torus_dimension(d, method):
    x = flat_torus(np.random.default_rng(d), 1500, d)
    # TwoNN MLE has sd ~ d / sqrt(n) = 0.05 d here; neighbour correlations and embedding curvature
    # add a little: tolerance 0.12 d (> 2 sd).
    assert twonn_dimension(x, method=method) == pytest.approx(d, abs=0.12 * d)


def test_twonn_embedded_linear_subspace_is_invariant_to_embedding(rng):
    z = rng.uniform(size=(800, 3))
    q, _ = np.linalg.qr(rng.standard_normal((10, 3)))
    emb = z @ q.T + 1.0  # isometric embedding of R^3 in R^10, shifted
    assert twonn_dimension(emb) == pytest.approx(twonn_dimension(z), rel=1e-9)


def test_mle_dimension_on_gaussian_cloud(rng):
    x = rng.standard_normal((1500, 3)) @ rng.standard_normal((3, 8))
    # Levina-Bickel on a Gaussian in 3-D: density varies slowly at k = 20; 15% tolerance.
    assert mle_dimension(x) == pytest.approx(3.0, rel=0.15)


def test_duplicates_removed_by_default_and_rejected_on_request(rng, caplog):
    x = flat_torus(rng, 400, 2)
    dup = np.vstack([x, x[:50]])
    with caplog.at_level(logging.INFO, logger="transferlab"):
        assert twonn_dimension(dup) == twonn_dimension(x[np.lexsort(x.T[::-1])])
    assert "duplicate" in caplog.text
    with pytest.raises(DataError, match="duplicate"):
        twonn_dimension(dup, duplicates="raise")
    assert np.isfinite(mle_dimension(dup))


def test_profile_levels_and_scales(rng):
    x = flat_torus(rng, 800, 2)
    prof = twonn_profile(x, min_points=50)
    assert list(prof.n_points) == [800, 400, 200, 100, 50]
    assert np.all(np.diff(prof.scale) > 0)  # fewer points probe larger length scales
    assert prof.dimension[0] == pytest.approx(twonn_dimension(x), rel=1e-12)
    assert np.all(np.abs(prof.dimension[:3] - 2.0) < 0.4)
