"""Closed forms for two-layer ReLU networks on Gaussian inputs: arc-cosine kernels and out-of-RKHS norms.

The nonlinear section of "Features are fate" (Tahir, Ganguli & Rotskoff 2024, Sec. 4, Fig. 3 and
App. E; docs/references.md) studies a two-layer ReLU student trained on a source teacher and then
transferred to a target teacher. After rich-regime pretraining the student's features span the source
teacher's neurons, so linear transfer is regression on those features and its error has the floor
``||P_perp f_t||^2``: the part of the target function outside the span of the source features. This
module computes that floor exactly, from the degree-one arc-cosine kernel of Cho & Saul (2009),
"Kernel methods for deep learning" (NeurIPS), eqs. (1)-(6) with ``n = 1``.

Setting. Inputs ``x ~ N(0, I_d)``; a neuron is a row ``w`` of a weight matrix (any norm, zero allowed:
a dead neuron). A two-layer network with ``m`` neurons ``W`` of shape ``(m, d)`` and output weights
``a`` of shape ``(m,)`` is::

    f(x) = sum_i a_i relu(w_i . x)

with the output weights carrying every scale factor: the mean-field student of the paper,
``f(x) = (1/m) sum_i c_i relu(w_i . x)``, is ``a = c / m``, and the teacher of :func:`relu_teacher_pair`
has ``a_i = 1/m*`` (or ``+-1/m*``). All norms and inner products are in ``L2(N(0, I_d))``:
``<f, g> = E_x[f(x) g(x)]``.

Kernel. For unit ``w, v`` with ``u = w . v``::

    k(u) = E[relu(w.x) relu(v.x)] = (sqrt(1 - u^2) + u (pi - arccos u)) / (2 pi)

(``k(1) = 1/2``, ``k(0) = 1/(2 pi)``, ``k(-1) = 0``), and by positive homogeneity of ``relu`` for any
norms ``E[relu(w.x) relu(v.x)] = ||w|| ||v|| k(w.v / (||w|| ||v||))`` (0 when either is 0).

Conventions. Arrays of neurons are ``(..., m, d)`` and output weights ``(..., m)``; leading axes are
batch axes (e.g. instances) and broadcast with numpy rules. Everything is computed in float64 and
returned as float64 arrays (0-d for unbatched input). Bad arrays (wrong shape, non-finite) raise
:class:`~transferlab.errors.DataError`; bad settings (``d``, ``m_star``, ``mu``, ``rcond``, a cosine
outside ``[-1, 1]``) raise :class:`~transferlab.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.theory.fate import _array

__all__ = [
    "ReluTeacherPair",
    "arccos_kernel",
    "function_inner",
    "function_norm2",
    "out_of_rkhs_fraction",
    "out_of_rkhs_norm2",
    "relu_gram",
    "relu_kernel",
    "relu_teacher_pair",
    "source_span_projection",
]

FloatArray = NDArray[np.float64]

#: How far outside ``[-1, 1]`` a cosine may lie and still be taken as rounding (then clipped).
COSINE_TOLERANCE: float = 1e-10


# --------------------------------------------------------------------------------------------------
# input checks


def _finite(name: str, value: ArrayLike, error: type[Exception] = DataError) -> FloatArray:
    """``value`` as a float64 array; ``error`` (default :class:`DataError`: these are data) if not real and finite."""
    return _array(name, value, error)


def _neurons(name: str, value: ArrayLike) -> FloatArray:
    """A stack of neurons ``(..., m, d)`` (``m = 0`` allowed, ``d >= 1``)."""
    arr = _finite(name, value)
    if arr.ndim < 2 or arr.shape[-1] < 1:
        raise DataError(f"{name} must have shape (..., m, d) with d >= 1, got shape {arr.shape}")
    return arr


def _network(a_name: str, a: ArrayLike, w_name: str, w: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Output weights ``(..., m)`` and neurons ``(..., m, d)`` with matching ``m``."""
    weights, neurons = _finite(a_name, a), _neurons(w_name, w)
    if weights.ndim < 1 or weights.shape[-1] != neurons.shape[-2]:
        raise DataError(
            f"{a_name} must have shape (..., m) with m = {neurons.shape[-2]} (the rows of {w_name}), "
            f"got shape {weights.shape}"
        )
    return weights, neurons


def _same_dimension(w_name: str, w: FloatArray, v_name: str, v: FloatArray) -> None:
    if w.shape[-1] != v.shape[-1]:
        raise DataError(
            f"{w_name} and {v_name} must have the same input dimension d, got {w.shape[-1]} and {v.shape[-1]}"
        )


# --------------------------------------------------------------------------------------------------
# kernels


def _k(u: FloatArray) -> FloatArray:
    """The arc-cosine kernel of cosines already in ``[-1, 1]``; ``sqrt((1-u)(1+u))`` keeps precision at ``|u| -> 1``."""
    return (np.sqrt((1.0 - u) * (1.0 + u)) + u * (np.pi - np.arccos(u))) / (2.0 * np.pi)


def arccos_kernel(u: ArrayLike) -> FloatArray:
    """Degree-one arc-cosine kernel of unit neurons (Cho & Saul 2009; Tahir et al. 2024, App. E).

    For unit ``w, v`` with cosine ``u = w . v`` and ``x ~ N(0, I_d)``::

        k(u) = E[relu(w.x) relu(v.x)] = (sqrt(1 - u^2) + u (pi - arccos u)) / (2 pi)

    increasing and convex on ``[-1, 1]``, with ``k(-1) = 0``, ``k(0) = 1/(2 pi)``, ``k(1) = 1/2``.

    Args:
        u: cosines, any shape. Values within :data:`COSINE_TOLERANCE` outside ``[-1, 1]`` are rounding
            and are clipped; values further out raise.

    Returns:
        ``k(u)``, float64 array of the shape of ``u``.

    Raises:
        ConfigError: ``u`` is not finite or lies outside ``[-1, 1]`` by more than the tolerance.
    """
    arr = _finite("u", u, ConfigError)
    if np.any(np.abs(arr) > 1.0 + COSINE_TOLERANCE):
        raise ConfigError(f"u must be a cosine in [-1, 1], got values up to |u| = {np.max(np.abs(arr))!r}")
    return _k(np.clip(arr, -1.0, 1.0))


def relu_kernel(W: ArrayLike, V: ArrayLike) -> FloatArray:
    """Cross-kernel of two sets of ReLU neurons of any norm: ``K_ij = E[relu(w_i.x) relu(v_j.x)]``.

    By positive homogeneity of ``relu``::

        K_ij = ||w_i|| ||v_j|| k(u_ij),     u_ij = w_i . v_j / (||w_i|| ||v_j||)

    with ``k`` the arc-cosine kernel (:func:`arccos_kernel`) and ``K_ij = 0`` where a neuron is zero.
    The cosines are clipped to ``[-1, 1]`` (Cauchy-Schwarz: only rounding can push them out).

    Args:
        W: neurons, shape ``(..., m, d)``.
        V: neurons, shape ``(..., k, d)``; leading axes broadcast against ``W``'s.

    Returns:
        ``K``, float64 array of shape ``(..., m, k)``.
    """
    w, v = _neurons("W", W), _neurons("V", V)
    _same_dimension("W", w, "V", v)
    return _kernel(w, v)


def _kernel(w: FloatArray, v: FloatArray) -> FloatArray:
    nw, nv = np.linalg.norm(w, axis=-1), np.linalg.norm(v, axis=-1)
    scale = nw[..., :, None] * nv[..., None, :]
    dots = w @ np.swapaxes(v, -1, -2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(scale > 0, dots / np.where(scale > 0, scale, 1.0), 0.0)
    return scale * _k(np.clip(u, -1.0, 1.0))


def relu_gram(W: ArrayLike) -> FloatArray:
    """Gram matrix of a set of ReLU neurons, ``G_ij = E[relu(w_i.x) relu(w_j.x)]`` (any norms).

    ``G = relu_kernel(W, W)``, made exactly symmetric with the exact diagonal ``G_ii = ||w_i||^2 / 2``.
    ``G`` is positive semi-definite (a Gram matrix in ``L2(N(0, I))``); it is singular when the
    functions ``relu(w_i . x)`` are linearly dependent, e.g. for repeated neurons or for ``d + 1``
    antipodal pairs (``relu(t) - relu(-t) = t``).

    Args:
        W: neurons, shape ``(..., m, d)``.

    Returns:
        ``G``, float64 array of shape ``(..., m, m)``.
    """
    w = _neurons("W", W)
    return _gram(w)


def _gram(w: FloatArray) -> FloatArray:
    g = _kernel(w, w)
    g = 0.5 * (g + np.swapaxes(g, -1, -2))
    m = w.shape[-2]
    g[..., np.arange(m), np.arange(m)] = 0.5 * np.sum(w * w, axis=-1)
    return g


# --------------------------------------------------------------------------------------------------
# functions f(x) = sum_i a_i relu(w_i . x)


def function_inner(a: ArrayLike, W: ArrayLike, b: ArrayLike, V: ArrayLike) -> FloatArray:
    """``L2(N(0, I))`` inner product of two two-layer ReLU networks, ``E[f(x) g(x)]``.

    With ``f(x) = sum_i a_i relu(w_i . x)`` and ``g(x) = sum_j b_j relu(v_j . x)`` (the output weights
    carry all scale factors; a mean-field network ``(1/m) sum c_i relu(w_i . x)`` is ``a = c/m``)::

        E[f g] = a^T K(W, V) b = sum_ij a_i b_j ||w_i|| ||v_j|| k(u_ij)

    Args:
        a: output weights of ``f``, shape ``(..., m)``; W: its neurons, ``(..., m, d)``.
        b: output weights of ``g``, shape ``(..., k)``; V: its neurons, ``(..., k, d)``.
            Leading axes broadcast.

    Returns:
        ``E[f g]``, float64 array of the broadcast leading shape (0-d for single networks).
    """
    a_, w = _network("a", a, "W", W)
    b_, v = _network("b", b, "V", V)
    _same_dimension("W", w, "V", v)
    return np.einsum("...i,...ij,...j->...", a_, _kernel(w, v), b_)


def function_norm2(a: ArrayLike, W: ArrayLike) -> FloatArray:
    """Squared ``L2(N(0, I))`` norm of ``f(x) = sum_i a_i relu(w_i . x)``: ``E[f^2] = a^T G(W) a``.

    Args:
        a: output weights, shape ``(..., m)``; W: neurons, shape ``(..., m, d)``.

    Returns:
        ``||f||^2 >= 0``, float64 array of the leading shape.
    """
    a_, w = _network("a", a, "W", W)
    return np.maximum(0.0, np.einsum("...i,...ij,...j->...", a_, _gram(w), a_))


# --------------------------------------------------------------------------------------------------
# projection on the span of the source features


def _rcond(rcond: float | None, m: int) -> float:
    if rcond is None:
        return max(m, 1) * float(np.finfo(np.float64).eps)
    return check_real(rcond, "rcond", low=0.0, high=1.0, high_open=True)


def _projection(
    a_t: ArrayLike, W_t: ArrayLike, W_s: ArrayLike, rcond: float | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(||f_t||^2, b^T G^+ b, c = G^+ b)`` with ``G = G(W_s)``, ``b_j = <f_t, relu(w_sj . x)>``."""
    a, wt = _network("a_t", a_t, "W_t", W_t)
    ws = _neurons("W_s", W_s)
    _same_dimension("W_t", wt, "W_s", ws)
    f2 = np.maximum(0.0, np.einsum("...i,...ij,...j->...", a, _gram(wt), a))
    b = np.einsum("...ji,...i->...j", _kernel(ws, wt), a)  # (..., m_s)
    g = _gram(ws)
    lead = np.broadcast_shapes(f2.shape, b.shape[:-1], g.shape[:-2])
    m_s = ws.shape[-2]
    if m_s == 0:
        return np.broadcast_to(f2, lead).copy(), np.zeros(lead), np.zeros((*lead, 0))
    cut = _rcond(rcond, m_s)
    lam, vec = np.linalg.eigh(np.broadcast_to(g, (*lead, m_s, m_s)))
    keep = lam > cut * np.maximum(lam[..., -1:], 0.0)
    inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    z = np.einsum("...ji,...j->...i", vec, np.broadcast_to(b, (*lead, m_s)))  # U^T b
    proj = np.sum(inv * z * z, axis=-1)
    coef = np.einsum("...ij,...j->...i", vec, inv * z)
    return np.broadcast_to(f2, lead).copy(), proj, coef


def source_span_projection(a_t: ArrayLike, W_t: ArrayLike, W_s: ArrayLike, *, rcond: float | None = None) -> FloatArray:
    """Output weights of the best approximation of the target teacher by the source features.

    The ``L2(N(0, I))`` projection of ``f_t(x) = sum_i a_ti relu(w_ti . x)`` onto
    ``span{relu(w . x): w a row of W_s}`` is ``sum_j c_j relu(w_sj . x)`` with the minimum-norm
    solution of the normal equations ``G c = b``::

        c = G^+ b,    G = relu_gram(W_s),    b_j = E[f_t(x) relu(w_sj . x)] = (K(W_s, W_t) a_t)_j

    (pseudo-inverse as in :func:`out_of_rkhs_norm2`).

    Args:
        a_t: target output weights ``(..., m_t)``; W_t: target neurons ``(..., m_t, d)``;
        W_s: source neurons ``(..., m_s, d)`` (``m_s = 0`` allowed). rcond: eigenvalue cutoff.

    Returns:
        ``c``, float64 array of shape ``(..., m_s)``.
    """
    return _projection(a_t, W_t, W_s, rcond)[2]


def out_of_rkhs_norm2(a_t: ArrayLike, W_t: ArrayLike, W_s: ArrayLike, *, rcond: float | None = None) -> FloatArray:
    """Squared norm of the target teacher outside the source features' span, ``||P_perp f_t||^2``.

    The floor of linear transfer in Tahir et al. (2024), Sec. 4 (eq. 18; App. E): with the target
    teacher ``f_t(x) = sum_i a_ti relu(w_ti . x)`` and ``P`` the ``L2(N(0, I_d))``-orthogonal projector
    onto ``H_s = span{relu(w . x): w a row of W_s}`` (the source teacher's features; ``H_s`` is the
    RKHS of the source feature kernel ``K_s(x, x') = sum_j relu(w_sj . x) relu(w_sj . x')``, so this is
    the "out-of-RKHS norm")::

        ||P_perp f_t||^2 = ||f_t||^2 - ||P f_t||^2 = a_t^T G(W_t) a_t - b^T G(W_s)^+ b,
        b_j = E[f_t(x) relu(w_sj . x)] = (K(W_s, W_t) a_t)_j

    It projects onto the span of the source *neurons* only: the source output weights play no role.

    Solve. ``G(W_s)^+`` is the eigendecomposition pseudo-inverse (``G = U diag(lam) U^T``; eigenvalues
    ``lam <= rcond * lam_max`` are dropped, default ``rcond = m_s * eps``). ``G`` is symmetric positive
    semi-definite and exactly singular for repeated neurons or antipodal pairs, so a plain Cholesky
    fails; Cholesky with jitter would bias the residual upwards by an amount set by the jitter, while the
    pseudo-inverse gives the projection onto the numerically resolved span with no bias. A dropped
    direction with eigenvalue ``lam`` changes the result by at most ``lam * ||a||^2``-sized rounding
    (``|u^T b|^2 <= lam ||f_t||^2`` by Cauchy-Schwarz). The difference is clipped to ``[0, ||f_t||^2]``,
    where the exact value lies, to remove rounding of order ``eps * ||f_t||^2``.

    Args:
        a_t: target output weights, shape ``(..., m_t)``.
        W_t: target neurons, shape ``(..., m_t, d)``.
        W_s: source neurons, shape ``(..., m_s, d)``; ``m_s = 0`` (no source features) gives ``||f_t||^2``.
            Leading axes broadcast.
        rcond: relative eigenvalue cutoff in ``[0, 1)``, or ``None`` for ``m_s * eps``.

    Returns:
        ``||P_perp f_t||^2``, float64 array of the broadcast leading shape.
    """
    f2, proj, _ = _projection(a_t, W_t, W_s, rcond)
    return np.clip(f2 - proj, 0.0, f2)


def out_of_rkhs_fraction(a_t: ArrayLike, W_t: ArrayLike, W_s: ArrayLike, *, rcond: float | None = None) -> FloatArray:
    """Fraction of the target teacher outside the source span, ``||P_perp f_t||^2 / ||f_t||^2`` in ``[0, 1]``.

    See :func:`out_of_rkhs_norm2` for the projection. ``0`` when the target lies in the source span
    (e.g. source = target), ``1`` when it is orthogonal to it (e.g. no source neurons).

    Raises:
        DataError: the target teacher is the zero function (``||f_t||^2 = 0``), where no fraction exists.
    """
    f2, proj, _ = _projection(a_t, W_t, W_s, rcond)
    if np.any(f2 <= 0):
        raise DataError("a_t, W_t define the zero function (||f_t||^2 = 0): the out-of-RKHS fraction is undefined")
    return np.clip(f2 - proj, 0.0, f2) / f2


# --------------------------------------------------------------------------------------------------
# the paper's teachers


class ReluTeacherPair(NamedTuple):
    """A target teacher and the source teacher made from it by removing neurons.

    ``f_t(x) = sum_i target_weights[i] relu(target_neurons[i] . x)`` and likewise for the source.

    Attributes:
        target_weights: ``(m_star,)`` output weights of the target teacher.
        target_neurons: ``(m_star, d)`` unit-norm neurons of the target teacher.
        source_weights: ``(m_s,)`` the target's output weights of the kept neurons (unchanged).
        source_neurons: ``(m_s, d)`` the kept neurons, in their original (target) order.
        kept: ``(m_s,)`` indices into the target of the kept neurons, increasing.
        removed: ``(m_star - m_s,)`` indices of the removed neurons, in the order drawn.
    """

    target_weights: FloatArray
    target_neurons: FloatArray
    source_weights: FloatArray
    source_neurons: FloatArray
    kept: NDArray[np.intp]
    removed: NDArray[np.intp]


def relu_teacher_pair(
    d: int,
    m_star: int,
    mu: float,
    generator: np.random.Generator,
    output_weights: Literal["uniform", "sign"] = "uniform",
) -> ReluTeacherPair:
    """Target and source ReLU teachers of Tahir et al. (2024), Sec. 4: the source lacks a fraction ``mu`` of them.

    Target teacher ``f_t(x) = sum_{i <= m*} a_i relu(w_i . x)`` with unit-norm neurons in uniformly
    random directions, ``w_i = g_i / ||g_i||``, ``g_i ~ N(0, I_d)``, and output weights in the
    mean-field scaling of the student:

    - ``"uniform"`` (default): ``a_i = 1/m*``;
    - ``"sign"``: ``a_i = s_i / m*`` with independent signs ``s_i = +-1`` (probability 1/2 each).

    The paper states unit-norm neurons, ``m* = 100`` and ``d = 100``; its output weights are not stated
    in what we could recover, and these two choices are ours (``"uniform"`` matches the student's
    ``1/m`` scaling). The source teacher is the target teacher with ``round(mu m*)`` of its neurons
    removed (round half up): draw a uniformly random permutation of ``0..m*-1`` and remove its first
    ``round(mu m*)`` entries; the kept neurons keep their output weights and their order. ``mu``
    plays the role of the angle ``theta`` of the linear model: ``mu = 0`` is source = target,
    ``mu = 1`` an empty source. For fixed generator state, sources at different ``mu`` are nested
    (a larger ``mu`` removes a superset).

    Draws, in order, from ``generator``: the ``(m*, d)`` standard normals ``g``; the ``m*`` signs
    (``"sign"`` only, ``generator.integers(0, 2, m*)``); the permutation (``generator.permutation(m*)``).

    Args:
        d: input dimension (>= 1).
        m_star: number of target neurons (>= 1).
        mu: fraction of neurons removed, in ``[0, 1]``.
        generator: a ``numpy.random.Generator``, the source of all randomness.
        output_weights: ``"uniform"`` or ``"sign"`` (above).

    Returns:
        A :class:`ReluTeacherPair` of float64 arrays.
    """
    d = check_int(d, "d", low=1)
    m_star = check_int(m_star, "m_star", low=1)
    mu_ = check_real(mu, "mu", low=0.0, high=1.0)
    if not isinstance(generator, np.random.Generator):
        raise ConfigError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
    check_choice(output_weights, "output_weights", ("uniform", "sign"))
    g = generator.standard_normal((m_star, d))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    if np.any(norms == 0):  # probability zero; never a silent NaN
        raise DataError("a teacher neuron was drawn with zero norm")
    neurons = g / norms
    weights = np.full(m_star, 1.0 / m_star)
    if output_weights == "sign":
        weights = weights * (2.0 * generator.integers(0, 2, m_star) - 1.0)
    perm = generator.permutation(m_star)
    n_removed = int(np.floor(mu_ * m_star + 0.5))
    removed = perm[:n_removed].astype(np.intp)
    kept = np.sort(perm[n_removed:]).astype(np.intp)
    return ReluTeacherPair(weights, neurons, weights[kept], neurons[kept], kept, removed)
