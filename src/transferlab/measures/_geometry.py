"""Numerical building blocks shared by the measures: distances, nearest neighbours, kernels, bases.

All functions take validated float64 ``(n_samples, n_features)`` arrays (see ``_validate``).
"""

from __future__ import annotations

import numpy as np

from transferlab.errors import DataError

__all__ = [
    "center",
    "sq_distances",
    "distances",
    "knn",
    "median_distance",
    "rbf_gram",
    "orthonormal_basis",
    "BLOCK_ROWS",
    "pairwise_sum",
]

# Rows per block for blocked O(n^2) computations: a (BLOCK_ROWS, n) float64 block stays small.
BLOCK_ROWS = 1024


def center(x: np.ndarray) -> np.ndarray:
    """Subtract the column means: ``X - 1 mean(X)``, shape ``(n, d)``."""
    return x - x.mean(axis=0, keepdims=True)


def sq_distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances ``D_ij = |x_i - y_j|^2``, shape ``(n_x, n_y)``, clipped at 0.

    Uses ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product); the diagonal is set to exactly 0 when
    ``y`` is omitted.
    """
    same = y is None
    y = x if y is None else y
    xx = np.einsum("ij,ij->i", x, x)
    yy = xx if same else np.einsum("ij,ij->i", y, y)
    d2 = xx[:, None] + yy[None, :] - 2.0 * (x @ y.T)
    np.maximum(d2, 0.0, out=d2)
    if same:
        np.fill_diagonal(d2, 0.0)
    return d2


def distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances ``|x_i - y_j|``, shape ``(n_x, n_y)``."""
    return np.sqrt(sq_distances(x, y))


def _candidates(
    q: np.ndarray, ref: np.ndarray, rr: np.ndarray, m: int, self_cols: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``m`` smallest keys ``|y_j|^2 - 2 q_i . y_j`` per row (in the inputs' dtype),
    excluding column ``self_cols[i]`` for row ``i`` if given, and the largest candidate key per row
    (every non-candidate key is at least that)."""
    key = q @ ref.T
    key *= -2.0
    key += rr
    if self_cols is not None:
        key[np.arange(q.shape[0]), self_cols] = np.inf
    if m < ref.shape[0]:
        cand = np.argpartition(key, m - 1, axis=1)[:, :m]
    else:
        cand = np.argsort(key, axis=1)[:, :m]
    bound = np.take_along_axis(key, cand, axis=1).max(axis=1)
    return cand, bound


def knn(
    query: np.ndarray,
    k: int,
    reference: np.ndarray | None = None,
    *,
    block_elements: int = 1 << 21,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (Euclidean), blocked so memory is ``O(block_elements + n k)``.

    With ``reference=None`` the neighbours of each query point are searched among the other query
    points (the point itself excluded). Candidates (``k`` plus a margin) are ranked with one
    float32 matrix product per row block by the key ``|y_j|^2 - 2 x_i . y_j`` (= ``|x_i - y_j|^2 -
    |x_i|^2``); their distances are then recomputed exactly in float64 as ``|x_i - y_j|`` and sorted
    by (distance, index), so ties are broken by the smaller index. Exactness check: a row is
    accepted only if a rigorous float32 rounding bound ``(p + 8) eps_32 (|x_i| + max_j |y_j|)^2``
    proves no non-candidate can be closer than its k-th exact distance; other rows are redone
    with float64 keys (then the margin absorbs float64 rounding).

    Returns ``(dist, idx)``, both of shape ``(n_query, k)``, sorted by increasing distance.
    """
    self_search = reference is None
    ref = query if reference is None else reference
    n_q, n_r = query.shape[0], ref.shape[0]
    available = n_r - 1 if self_search else n_r
    if k > available:
        raise DataError(f"k={k} nearest neighbours requested but only {available} candidate points exist")
    # Shift both sets by one vector (distances unchanged) so the expanded form has small norms.
    shift = ref.mean(axis=0)
    query = query - shift
    ref = query if self_search else ref - shift
    m = min(available, k + max(4, k // 2))
    rr = np.einsum("ij,ij->i", ref, ref)
    ref32, rr32 = ref.astype(np.float32), rr.astype(np.float32)
    slack = (query.shape[1] + 8) * float(np.finfo(np.float32).eps)
    rmax = float(np.sqrt(rr.max()))
    block_rows = int(max(16, min(4096, block_elements // max(n_r, 1))))
    out_d = np.empty((n_q, k))
    out_i = np.empty((n_q, k), dtype=np.intp)
    for start in range(0, n_q, block_rows):
        stop = min(start + block_rows, n_q)
        q = query[start:stop]
        qq = np.einsum("ij,ij->i", q, q)
        self_cols = np.arange(start, stop) if self_search else None
        cand, bound = _candidates(q.astype(np.float32), ref32, rr32, m, self_cols)
        exact, order = _exact(q, ref, cand, k, start, self_search)
        kth = np.take_along_axis(exact, order, axis=1)[:, k - 1]
        err = slack * (np.sqrt(qq) + rmax) ** 2
        redo = np.flatnonzero(bound.astype(np.float64) + qq - err <= kth * kth)
        if m < available and redo.size:
            cand[redo] = _candidates(q[redo], ref, rr, m, None if self_cols is None else self_cols[redo])[0]
            exact, order = _exact(q, ref, cand, k, start, self_search)
        out_d[start:stop] = np.take_along_axis(exact, order, axis=1)[:, :k]
        out_i[start:stop] = np.take_along_axis(cand, order, axis=1)[:, :k]
    return out_d, out_i


def _exact(q, ref, cand, k, start, self_search):
    """Exact float64 distances to the candidates and their (distance, index) sort order."""
    diff = ref[cand] - q[:, None, :]
    exact = np.sqrt(np.einsum("bmj,bmj->bm", diff, diff))
    if self_search:
        exact[cand == (np.arange(q.shape[0]) + start)[:, None]] = np.inf
    order = np.lexsort((cand, exact), axis=1)
    return exact, order


def median_distance(x: np.ndarray, max_points: int = 2000) -> float:
    """Median of the pairwise Euclidean distances ``|x_i - x_j|``, ``i < j`` (median heuristic).

    For more than ``max_points`` rows, an evenly spaced deterministic subset of rows is used.
    Raises :class:`DataError` when the median is 0 (more than half the pairs are duplicates).
    """
    n = x.shape[0]
    if n > max_points:
        x = x[np.linspace(0, n - 1, max_points).astype(np.intp)]
    d = distances(x)
    iu = np.triu_indices(x.shape[0], k=1)
    med = float(np.median(d[iu]))
    if not med > 0.0:
        raise DataError("median pairwise distance is 0 (mostly duplicate points); pass an explicit sigma")
    return med


def rbf_gram(x: np.ndarray, sigma: float, y: np.ndarray | None = None) -> np.ndarray:
    """Gaussian kernel ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))``, shape ``(n_x, n_y)``."""
    return np.exp(sq_distances(x, y) / (-2.0 * sigma * sigma))


def orthonormal_basis(x: np.ndarray, name: str, *, rtol: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Thin SVD ``X = U S V^T`` of a (centered) matrix and its numerical rank.

    Returns ``(U, s, rank)`` where ``U`` is ``(n, min(n, d))``; singular values below
    ``rtol * s_max`` (default ``max(n, d) * eps``) count as zero.
    """
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        raise DataError(f"{name}: all features are constant (zero variance after centering)")
    tol = (rtol if rtol is not None else max(x.shape) * np.finfo(np.float64).eps) * s[0]
    rank = int(np.count_nonzero(s > tol))
    return u, s, rank


def pairwise_sum(a: np.ndarray, b: np.ndarray | None, fn, *, exact: bool = False) -> float:
    """``sum_ij fn(|a_i - b_j|^2)`` over all pairs, in row blocks of ``a`` (memory ``O(block * n_b)``).

    With ``b=None`` the sum runs over ``a`` against itself and the squared self-distances are
    exactly 0 (so ``fn(0)`` is counted ``n`` times). ``exact`` computes ``|a_i - b_j|^2`` from the
    differences (slower, no cancellation; for ``fn`` like ``sqrt`` that amplify tiny errors at 0).
    """
    from scipy.spatial.distance import cdist

    ref = a if b is None else b
    total = 0.0
    for start in range(0, a.shape[0], BLOCK_ROWS):
        block = a[start : start + BLOCK_ROWS]
        d2 = cdist(block, ref, "sqeuclidean") if exact else sq_distances(block, ref)
        if b is None:
            rows = np.arange(d2.shape[0])
            d2[rows, rows + start] = 0.0
        total += float(fn(d2).sum())
    return total
