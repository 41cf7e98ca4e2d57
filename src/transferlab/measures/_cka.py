"""HSIC and centered kernel alignment (CKA): linear (feature or Gram form), RBF, streaming.

Notation: ``X`` is ``(n, p)``, ``Y`` is ``(n, q)``, rows paired; ``K = X X^T``, ``L = Y Y^T`` (or RBF
Gram matrices); ``H = I - 11^T/n`` is the centering matrix.

- biased HSIC (Gretton et al. 2005): ``HSIC_b(K, L) = tr(K H L H) / (n-1)^2``;
  for linear kernels ``= ||X_c^T Y_c||_F^2 / (n-1)^2`` with column-centered ``X_c, Y_c``.
- debiased HSIC (Song et al. 2012), with ``K~, L~`` the Gram matrices with zeroed diagonal:
  ``HSIC_u = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``.
- CKA (Kornblith et al. 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from transferlab.errors import DataError
from transferlab.measures._geometry import median_distance, rbf_gram
from transferlab.measures._validate import as_matrix, check_bool, check_choice, check_real, check_same_samples

__all__ = [
    "cka_similarity",
    "hsic",
    "hsic_gram",
    "LinearCKAAccumulator",
]

_ROWS_PER_BLOCK = 8192


def hsic_gram(k: Any, l: Any, *, debiased: bool = False) -> float:
    """HSIC from two ``(n, n)`` Gram matrices (biased or debiased, equations in the module doc).

    This is the reference ``O(n^2)`` form; it takes arbitrary (symmetric) kernel matrices.
    """
    k = as_matrix(k, "K", allow_1d=False)
    l = as_matrix(l, "L", allow_1d=False)
    n = k.shape[0]
    if k.shape != (n, n) or l.shape != (n, n):
        raise DataError(f"K and L must be square (n, n) Gram matrices of equal size; got {k.shape} and {l.shape}")
    if debiased:
        if n < 4:
            raise DataError(f"debiased HSIC needs at least 4 samples, got {n}")
        kt = k.copy()
        lt = l.copy()
        np.fill_diagonal(kt, 0.0)
        np.fill_diagonal(lt, 0.0)
        kt1 = kt.sum(axis=1)
        lt1 = lt.sum(axis=1)
        value = (
            np.sum(kt * lt)
            + kt1.sum() * lt1.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * float(kt1 @ lt1)
        )
        return float(value / (n * (n - 3)))
    kc = k - k.mean(axis=0, keepdims=True)
    kc -= kc.mean(axis=1, keepdims=True)
    lc = l - l.mean(axis=0, keepdims=True)
    lc -= lc.mean(axis=1, keepdims=True)
    return float(np.sum(kc * lc) / (n - 1) ** 2)


class LinearCKAAccumulator:
    """Streaming linear HSIC / CKA: add row batches of paired ``X (b, p)``, ``Y (b, q)``; divide once.

    Keeps only ``O(p^2 + q^2 + pq)`` sums (no Gram matrix), so it handles any number of samples.
    All batches are shifted by the first batch's column means before accumulating (HSIC is
    translation invariant, and the shift keeps the sums well conditioned).

    Precision: sums are accumulated across blocks in float64. When both inputs are float32, each
    block of at most ``_ROWS_PER_BLOCK`` rows is centred and summed in float32 (the O(n p^2) block
    products at full float32 speed), with relative rounding error about ``sqrt(block) * 6e-8 <
    1e-5``, well below the precision float32 data already carries; otherwise all in float64.

    The sums suffice for both estimators because, for linear kernels,
    ``tr(KL) = ||X^T Y||_F^2``, ``1^T K 1 = |sum_i x_i|^2``, ``diag(K)_i = |x_i|^2`` and
    ``(K 1)_i = x_i . sum_j x_j``.

    >>> acc = LinearCKAAccumulator()
    >>> for xb, yb in batches:            # doctest: +SKIP
    ...     acc.update(xb, yb)
    >>> acc.cka(debiased=False)           # doctest: +SKIP
    """

    def __init__(self, shift_x: np.ndarray | None = None, shift_y: np.ndarray | None = None) -> None:
        """``shift_x (p,)``, ``shift_y (q,)``: subtracted from every batch (default: the first
        batch's column means); the exact column means give the best-conditioned sums."""
        self._n = 0
        self._shift_x = None if shift_x is None else np.asarray(shift_x, dtype=np.float64)
        self._shift_y = None if shift_y is None else np.asarray(shift_y, dtype=np.float64)
        self._terms: dict[str, Any] = {}

    @property
    def n_samples(self) -> int:
        """Number of rows seen so far."""
        return self._n

    def update(self, x: Any, y: Any) -> LinearCKAAccumulator:
        """Add a batch of paired rows ``x (b, p)`` and ``y (b, q)``; returns ``self``."""
        x = as_matrix(x, "X", min_samples=1, cast=False)
        y = as_matrix(y, "Y", min_samples=1, cast=False)
        check_same_samples(x, y)
        if self._shift_x is None:
            self._shift_x = x.mean(axis=0, dtype=np.float64)
            self._shift_y = y.mean(axis=0, dtype=np.float64)
        elif x.shape[1] != self._shift_x.shape[0] or y.shape[1] != self._shift_y.shape[0]:
            raise DataError(
                f"batch feature sizes changed: expected X (*, {self._shift_x.shape[0]}) and "
                f"Y (*, {self._shift_y.shape[0]}), got X {x.shape} and Y {y.shape}"
            )
        single = np.asarray(x).dtype == np.float32 and np.asarray(y).dtype == np.float32
        dtype = np.float32 if single else np.float64
        shift_x, shift_y = self._shift_x.astype(dtype), self._shift_y.astype(dtype)
        for start in range(0, x.shape[0], _ROWS_PER_BLOCK):
            xb = np.asarray(x[start : start + _ROWS_PER_BLOCK], dtype=dtype) - shift_x
            yb = np.asarray(y[start : start + _ROWS_PER_BLOCK], dtype=dtype) - shift_y
            self._add(xb, yb)
        return self

    def _add(self, xb: np.ndarray, yb: np.ndarray) -> None:
        """Add one block's sums, computed in the block's dtype and accumulated in float64."""
        nx = np.einsum("ij,ij->i", xb, xb)  # diag(K) on this block
        ny = np.einsum("ij,ij->i", yb, yb)
        new = {
            "xtx": xb.T @ xb,
            "yty": yb.T @ yb,
            "xty": xb.T @ yb,
            "sx": xb.sum(axis=0),
            "sy": yb.sum(axis=0),
            "nx": nx.sum(),
            "ny": ny.sum(),
            "nxx": nx @ nx,
            "nyy": ny @ ny,
            "nxy": nx @ ny,
            "nx_x": nx @ xb,  # sum_i |x_i|^2 x_i
            "ny_y": ny @ yb,
            "nx_y": nx @ yb,
            "ny_x": ny @ xb,
        }
        new = {key: np.asarray(value, dtype=np.float64) for key, value in new.items()}
        if not self._terms:
            self._terms = new
        else:
            for key, value in new.items():
                self._terms[key] = self._terms[key] + value
        self._n += xb.shape[0]

    def _hsic_terms(self, debiased: bool) -> tuple[float, float, float]:
        """(HSIC(K, L), HSIC(K, K), HSIC(L, L)) from the accumulated sums."""
        t, n = self._terms, self._n
        if n < (4 if debiased else 2):
            raise DataError(f"{'debiased' if debiased else 'biased'} HSIC needs at least {4 if debiased else 2} samples, got {n}")
        sx, sy = t["sx"], t["sy"]
        if not debiased:
            # Centered cross products: X_c^T Y_c = X^T Y - s_x s_y^T / n.
            cxy = t["xty"] - np.outer(sx, sy) / n
            cxx = t["xtx"] - np.outer(sx, sx) / n
            cyy = t["yty"] - np.outer(sy, sy) / n
            scale = (n - 1) ** 2
            return (np.sum(cxy * cxy) / scale, np.sum(cxx * cxx) / scale, np.sum(cyy * cyy) / scale)

        def unbiased(mab, sa, sb, na, nb, nab, na_b, nb_a) -> float:
            # mab = A^T B, s = column sums, na = sum_i |a_i|^2, nab = sum_i |a_i|^2 |b_i|^2,
            # na_b = sum_i |a_i|^2 b_i, nb_a = sum_i |b_i|^2 a_i.
            tr = np.sum(mab * mab) - nab  # tr(K~ L~)
            ka = sa @ sa - na  # 1^T K~ 1
            lb = sb @ sb - nb  # 1^T L~ 1
            cross = sa @ mab @ sb - na_b @ sb - nb_a @ sa + nab  # 1^T K~ L~ 1
            return float((tr + ka * lb / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3)))

        kl = unbiased(t["xty"], sx, sy, t["nx"], t["ny"], t["nxy"], t["nx_y"], t["ny_x"])
        kk = unbiased(t["xtx"], sx, sx, t["nx"], t["nx"], t["nxx"], t["nx_x"], t["nx_x"])
        ll = unbiased(t["yty"], sy, sy, t["ny"], t["ny"], t["nyy"], t["ny_y"], t["ny_y"])
        return kl, kk, ll

    def hsic(self, *, debiased: bool = False) -> float:
        """Linear HSIC(K, L) of all rows added so far."""
        return float(self._hsic_terms(debiased)[0])

    def cka(self, *, debiased: bool = False) -> float:
        """Linear CKA of all rows added so far (see :func:`cka_similarity`)."""
        return _cka_from_terms(*self._hsic_terms(debiased))


def _cka_from_terms(kl: float, kk: float, ll: float) -> float:
    for value, name in ((kk, "X"), (ll, "Y")):
        if not value > 0.0:
            raise DataError(
                f"HSIC({name}, {name}) is not positive: {name} has zero variance after centering (all "
                "features constant), or too few samples for the debiased estimator; CKA is undefined"
            )
    return float(kl / np.sqrt(kk * ll))


def _linear_grams(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    return xc @ xc.T, yc @ yc.T


def hsic(
    x: Any,
    y: Any,
    *,
    kernel: Literal["linear", "rbf"] = "linear",
    debiased: bool = False,
    sigma: float | None = None,
    method: Literal["auto", "feature", "gram"] = "auto",
) -> float:
    """Hilbert-Schmidt independence criterion between paired representations.

    Args:
        x: ``(n, p)`` array (numpy or torch).
        y: ``(n, q)`` array with the same rows.
        kernel: ``"linear"`` (``k(a, b) = a.b``) or ``"rbf"`` (``exp(-|a-b|^2 / (2 sigma^2))``).
        debiased: use the unbiased estimator of Song et al. (2012) instead of ``tr(KHLH)/(n-1)^2``.
        sigma: RBF bandwidth; ``None`` takes the median pairwise distance, separately for X and Y.
        method: for the linear kernel, ``"feature"`` works with ``p x q`` cross-covariances
            (``O(n p q)`` time, ``O(pq)`` extra memory), ``"gram"`` with ``n x n`` Gram matrices;
            ``"auto"`` picks the cheaper one (feature form when ``p q <= n (p + q)``).
    """
    kernel = check_choice(kernel, "kernel", ("linear", "rbf"))
    method = check_choice(method, "method", ("auto", "feature", "gram"))
    return _hsic_triplet(x, y, kernel, check_bool(debiased, "debiased"), sigma, method)[0]


def _hsic_triplet(x, y, kernel, debiased, sigma, method) -> tuple[float, float, float]:
    cast = kernel != "linear"
    x = as_matrix(x, "X", min_samples=4 if debiased else 2, cast=cast)
    y = as_matrix(y, "Y", min_samples=4 if debiased else 2, cast=cast)
    check_same_samples(x, y)
    n, p = x.shape
    q = y.shape[1]
    if kernel == "linear":
        if method == "auto":
            method = "feature" if p * q <= n * (p + q) else "gram"
        if method == "feature":
            acc = LinearCKAAccumulator(x.mean(axis=0, dtype=np.float64), y.mean(axis=0, dtype=np.float64))
            acc.update(x, y)
            return acc._hsic_terms(debiased)
        k, l = _linear_grams(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    else:
        if sigma is not None:
            sigma = check_real(sigma, "sigma", low=0.0, low_open=True)
        sx = median_distance(x) if sigma is None else float(sigma)
        sy = median_distance(y) if sigma is None else float(sigma)
        k, l = rbf_gram(x, sx), rbf_gram(y, sy)
    return (
        hsic_gram(k, l, debiased=debiased),
        hsic_gram(k, k, debiased=debiased),
        hsic_gram(l, l, debiased=debiased),
    )


def cka_similarity(
    x: Any,
    y: Any,
    kernel: Literal["linear", "rbf"] = "linear",
    debiased: bool = False,
    *,
    sigma: float | None = None,
    method: Literal["auto", "feature", "gram"] = "auto",
) -> float:
    """Centered kernel alignment between two representations of the same ``n`` inputs.

    ``CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K``, ``L`` the Gram matrices of
    ``X (n, p)`` and ``Y (n, q)`` (Kornblith et al. 2019). Linear CKA equals
    ``||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` and is computed in feature space when
    that is cheaper (``O(n p q)`` time, memory ``O(pq + block * (p + q))``; float32 inputs are
    multiplied in float32 block by block and accumulated in float64, see :class:`LinearCKAAccumulator`).

    Biased CKA lies in ``[0, 1]``; debiased CKA (``debiased=True``, Song et al. 2012 HSIC) removes
    the finite-``n`` bias toward 1 and may be slightly negative for unrelated representations.
    Invariant to orthogonal maps, isotropic scaling and translation of either argument (RBF with
    the median heuristic too); NOT invariant to general invertible linear maps.

    Args:
        x, y: ``(n, p)`` and ``(n, q)`` arrays (numpy or torch), rows paired.
        kernel: ``"linear"`` or ``"rbf"``.
        debiased: use debiased HSIC (needs ``n >= 4``).
        sigma: RBF bandwidth; default the median pairwise distance of each representation.
        method: ``"auto"``, ``"feature"`` or ``"gram"`` (linear kernel only; see :func:`hsic`).

    Raises:
        DataError: mismatched rows, non-finite entries, too few samples, or a representation whose
            features are all constant.
    """
    kernel = check_choice(kernel, "kernel", ("linear", "rbf"))
    method = check_choice(method, "method", ("auto", "feature", "gram"))
    return _cka_from_terms(*_hsic_triplet(x, y, kernel, check_bool(debiased, "debiased"), sigma, method))
