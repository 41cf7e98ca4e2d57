"""Closed forms of "Features are fate" (Tahir, Ganguli, Rotskoff 2024): deep linear transfer.

Equation, theorem and appendix numbers are those of arXiv 2410.08194 v2 (docs/references.md); the
closed forms beyond the paper (the balancedness scale ``c``, the finite-source corrections) are
derived in docs/derivations/finite_source_finetuning.md.

Setting (Sec. 3): inputs ``x ~ N(0, I_d)``; unit-norm source and target teachers with
overlap ``cos(theta) = beta_s . beta_t``; target labels ``y = beta_t . x + eps``, ``eps ~ N(0, sigma^2)``;
``n = gamma d`` target samples; risk ``R = ||beta_hat - beta_t||^2``. Pretraining from a vanishing
initialisation makes the hidden features rank one along the source teacher; the three protocols are

- scratch (``sc``): the minimum-norm interpolator ``beta_sc = X^+ y`` (the gradient-flow limit);
- linear transfer (``lt``): ridge on the scalar feature ``z = X beta_s`` (the frozen, rank-one features);
- fine-tuning (``ft``): ``beta_ft = beta_sc + c (I - P) beta_s`` with ``P`` the projector on row(X).

Transferability ``T = R_sc - R_tx`` (``T > 0``: transfer helps). Every function takes array-like
arguments, broadcasts them against each other with numpy rules, computes in float64 and returns a
float64 ``ndarray`` of the broadcast shape (a 0-d array for scalar input). Angles are in radians.
Invalid input raises :class:`~transferlab.errors.ConfigError` (e.g. ``gamma == 1`` exactly where the
scratch risk diverges, ``n <= 2`` for the unregularised probe, ``sigma < 0``).

Where a keyword ``d`` is accepted, ``d=None`` gives the proportional limit ``n, d -> inf`` at fixed
``gamma`` and an integer ``d`` gives the exact Gaussian finite-size expectation with ``n = gamma d``
(for the balancedness-corrected fine-tuning formulas: the plug-in or second-order values their
docstrings state).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate

from transferlab._checks import check_int
from transferlab.errors import ConfigError

__all__ = [
    "FINETUNE_BREAK_EVEN_ANGLE",
    "NegativeTransferInterval",
    "balancedness_scale",
    "finetune_break_even_angle",
    "finetune_risk",
    "finetune_transferability",
    "finetune_transferability_corrected",
    "finetune_transferability_finite_source",
    "finite_source_break_even_angle",
    "finite_source_overlap",
    "linear_transfer_negative_interval",
    "linear_transfer_negative_threshold",
    "linear_transfer_noiseless_boundary",
    "linear_transfer_risk",
    "linear_transfer_risk_finite_source",
    "linear_transfer_risk_ridge",
    "linear_transferability",
    "min_norm_sq_norm",
    "scratch_risk",
    "task_kl",
]

FloatArray = NDArray[np.float64]

#: Fine-tuning (eq. 15) beats scratch iff ``theta < pi/3`` (60 degrees), for every ``gamma < 1``.
FINETUNE_BREAK_EVEN_ANGLE: float = float(np.pi / 3)


# --------------------------------------------------------------------------------------------------
# input checks


def _array(name: str, value: ArrayLike, error: type[Exception] = ConfigError) -> FloatArray:
    """``value`` as a float64 array; ``error`` (default :class:`ConfigError`) if it is not real and finite.
    Shared with :mod:`transferlab.theory.relu`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be real numbers, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise error(f"{name} must be finite, got {value!r}")
    return arr


def _positive(name: str, value: ArrayLike) -> FloatArray:
    arr = _array(name, value)
    if np.any(arr <= 0):
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return arr


def _nonnegative(name: str, value: ArrayLike) -> FloatArray:
    arr = _array(name, value)
    if np.any(arr < 0):
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return arr


def _ratio(name: str, value: ArrayLike) -> FloatArray:
    """A sample ratio ``gamma > 0`` with ``gamma != 1`` (the interpolation threshold)."""
    arr = _positive(name, value)
    if np.any(arr == 1.0):
        raise ConfigError(f"{name} == 1 exactly is the interpolation threshold, where the risk diverges")
    return arr


def _dimension(d: int | None) -> int | None:
    return check_int(d, "d", low=3, optional=True)


# --------------------------------------------------------------------------------------------------
# scratch (minimum-norm interpolator)


def _variance_factor(gamma: FloatArray, d: int | None) -> FloatArray:
    """``E tr((X X^T)^{-1})`` (n < d) or ``E tr((X^T X)^{-1})`` (n > d), the factor of ``sigma^2``.

    Proportional limit: ``gamma/(1-gamma)`` (gamma < 1), ``1/(gamma-1)`` (gamma > 1). Exact (inverse
    Wishart mean, ``n = gamma d``): ``n/(d-n-1)`` (n < d-1), ``d/(n-d-1)`` (n > d+1); ``n`` within one
    of ``d`` diverges and raises.
    """
    if d is None:
        return np.where(gamma < 1, gamma / np.abs(1 - gamma), 1 / np.abs(gamma - 1))
    n = gamma * d
    if np.any(np.abs(n - d) <= 1):
        raise ConfigError(f"exact finite-size risk needs |n - d| > 1 (n = gamma d); got n = {n} with d = {d}")
    return np.where(n < d, n / np.abs(d - n - 1), d / np.abs(n - d - 1))


def min_norm_sq_norm(gamma: ArrayLike, sigma: ArrayLike, d: int | None = None) -> FloatArray:
    """Expected squared norm of the minimum-norm fit to a unit teacher, ``E ||X^+ y||^2``.

    ``E ||X^+ y||^2 = min(1, gamma) + sigma^2 V(gamma)``, with ``V = gamma/(1-gamma)`` (gamma < 1) or
    ``1/(gamma-1)`` (gamma > 1) in the proportional limit, ``n/(d-n-1)`` or ``d/(n-d-1)`` exactly
    (``n = gamma d``). Used for the balancedness scale and the finite-source formulas.

    Args:
        gamma: sample ratio ``n/d`` (> 0, != 1), any shape.
        sigma: label-noise standard deviation (>= 0), broadcast against ``gamma``.
        d: input dimension for the exact expectation, or ``None`` for the proportional limit.
    """
    g, s = np.broadcast_arrays(_ratio("gamma", gamma), _nonnegative("sigma", sigma))
    return np.minimum(1.0, g) + s**2 * _variance_factor(g, _dimension(d))


def scratch_risk(gamma: ArrayLike, sigma: ArrayLike, d: int | None = None) -> FloatArray:
    """Risk of the minimum-norm interpolator trained from scratch (Thm 3.6, eq. 8).

    Proportional limit::

        R_sc = (1 - gamma) + sigma^2 gamma / (1 - gamma)      (gamma < 1)
        R_sc = sigma^2 / (gamma - 1)                          (gamma > 1)

    Exact for Gaussian inputs at finite ``d`` (``n = gamma d``; bias ``||(I-P) beta_t||^2``, variance
    ``sigma^2 tr((X X^T)^{-1})``)::

        R_sc = 1 - n/d + sigma^2 n / (d - n - 1)              (n < d - 1)
        R_sc = sigma^2 d / (n - d - 1)                        (n > d + 1)

    Args:
        gamma: sample ratio ``n/d`` (> 0, != 1), any shape.
        sigma: label-noise standard deviation (>= 0), broadcast against ``gamma``.
        d: input dimension for the exact finite-size value, or ``None`` for the limit.

    Returns:
        ``R_sc``, float64 array of the broadcast shape.
    """
    g, s = np.broadcast_arrays(_ratio("gamma", gamma), _nonnegative("sigma", sigma))
    return np.maximum(0.0, 1.0 - g) + s**2 * _variance_factor(g, _dimension(d))


# --------------------------------------------------------------------------------------------------
# linear transfer (ridge probe on the rank-one pretrained feature)


@lru_cache(maxsize=8192)
def _inverse_moments(n: float, a: float) -> tuple[float, float]:
    """``(E[1/(q+a)], E[1/(q+a)^2])`` for ``q ~ chi^2_n``, ``a >= 0``.

    From ``1/(q+a)^k = (1/Gamma(k)) int_0^inf t^{k-1} exp(-t(q+a)) dt`` and ``E exp(-t q) =
    (1+2t)^{-n/2}``: ``E[1/(q+a)] = int_0^inf e^{-ta} (1+2t)^{-n/2} dt`` and ``E[1/(q+a)^2] =
    int_0^inf t e^{-ta} (1+2t)^{-n/2} dt`` (one-dimensional quadrature; ``1/(n-2)`` at ``a = 0``).
    """
    if a == 0.0:
        return 1.0 / (n - 2.0), 0.0
    # Substitute t = u / (n + a): the integrands then decay on a scale of order one.
    scale = 1.0 / (n + a)

    def first(u: float) -> float:
        t = u * scale
        return float(np.exp(-t * a - 0.5 * n * np.log1p(2 * t)))

    m1 = integrate.quad(first, 0.0, np.inf, epsabs=0.0, epsrel=1e-11, limit=200)[0] * scale
    m2 = integrate.quad(lambda u: u * scale * first(u), 0.0, np.inf, epsabs=0.0, epsrel=1e-11, limit=200)[0]
    return m1, m2 * scale


def linear_transfer_risk(theta: ArrayLike, n: ArrayLike, sigma: ArrayLike, lam: ArrayLike = 0.0) -> FloatArray:
    """Expected risk of linear transfer with an infinite source, exact for every ``n`` (Thm 3.7, eq. 10).

    The frozen feature is ``z = X beta_s`` (``q = ||z||^2 ~ chi^2_n``); the off-source part of
    ``beta_t`` acts as extra label noise, ``s^2 = sigma^2 + sin^2(theta)``. The probe
    ``b = z^T y / (q + n lam)`` gives ``R = sin^2(theta) + (b - cos(theta))^2``, hence::

        lam = 0:  E R_lt = sin^2(theta) + (sigma^2 + sin^2(theta)) / (n - 2)          (n > 2)
        lam > 0:  E R_lt = sin^2(theta) + cos^2(theta) a^2 E[(q+a)^-2]
                           + s^2 (E[(q+a)^-1] - a E[(q+a)^-2]),         a = n lam   (n >= 1)

    with the inverse chi-square moments by one-dimensional quadrature (exact to ~1e-10). As
    ``n -> inf`` this tends to :func:`linear_transfer_risk_ridge`.

    Args:
        theta: source-target angle (radians), any shape.
        n: target sample size (> 2 when ``lam == 0``, >= 1 otherwise; need not be an integer).
        sigma: target label-noise standard deviation (>= 0).
        lam: ridge strength of the probe ``(F^T F + n lam I)^{-1} F^T y`` (>= 0).

    Returns:
        ``E R_lt``, float64 array of the broadcast shape.
    """
    th, nn, s, lm = np.broadcast_arrays(
        _array("theta", theta), _positive("n", n), _nonnegative("sigma", sigma), _nonnegative("lam", lam)
    )
    if np.any((lm == 0) & (nn <= 2)):
        raise ConfigError(f"the unregularised probe needs n > 2 (E[1/chi^2_n] = 1/(n-2)), got n = {n!r}")
    if np.any(nn < 1):
        raise ConfigError(f"n must be >= 1, got {n!r}")
    sin2, cos2 = np.sin(th) ** 2, np.cos(th) ** 2
    a = nn * lm
    pairs, inverse = np.unique(np.stack([nn.ravel(), a.ravel()], axis=1), axis=0, return_inverse=True)
    moments = np.array([_inverse_moments(float(p[0]), float(p[1])) for p in pairs]).reshape(-1, 2)
    m1 = moments[inverse.ravel(), 0].reshape(nn.shape)
    m2 = moments[inverse.ravel(), 1].reshape(nn.shape)
    return sin2 + cos2 * a**2 * m2 + (s**2 + sin2) * (m1 - a * m2)


def linear_transfer_risk_ridge(theta: ArrayLike, lam: ArrayLike) -> FloatArray:
    """Large-``n`` risk of the ridge probe (Thm 3.8, eq. 13).

    ``b_lam -> cos(theta)/(1 + lam)`` and::

        R_lt^lam = 1 - (1 + 2 lam) / (1 + lam)^2 * cos^2(theta)

    increasing in ``lam`` (ridge never helps linear transfer); ``sin^2(theta)`` at ``lam = 0``.

    Args:
        theta: angle (radians), any shape; lam: ridge strength (>= 0), broadcast against it.
    """
    th, lm = np.broadcast_arrays(_array("theta", theta), _nonnegative("lam", lam))
    return 1.0 - (1.0 + 2.0 * lm) / (1.0 + lm) ** 2 * np.cos(th) ** 2


def linear_transferability(
    theta: ArrayLike, gamma: ArrayLike, sigma: ArrayLike, d: int | None = None, lam: ArrayLike = 0.0
) -> FloatArray:
    """Transferability of linear transfer, ``T_lt = R_sc - R_lt`` (eq. 11).

    Proportional limit: ``T_lt = R_sc(gamma, sigma) - R_lt^lam(theta)`` (``sin^2 theta`` at ``lam = 0``,
    eq. 13 otherwise). With ``d``: exact finite-size ``R_sc`` minus the exact ``E R_lt`` at
    ``n = gamma d`` (:func:`scratch_risk`, :func:`linear_transfer_risk`).

    Args:
        theta: angle (radians); gamma: target sample ratio (> 0, != 1); sigma: target noise (>= 0);
        lam: probe ridge (>= 0); all broadcast. d: dimension, or ``None`` for the limit.
    """
    r_sc = scratch_risk(gamma, sigma, d)
    if d is None:
        return r_sc - linear_transfer_risk_ridge(theta, lam)
    return r_sc - linear_transfer_risk(theta, np.asarray(gamma, dtype=np.float64) * d, sigma, lam)


# --------------------------------------------------------------------------------------------------
# fine-tuning


def finetune_transferability(theta: ArrayLike, gamma: ArrayLike) -> FloatArray:
    """Transferability of fine-tuning from an infinite source (Thm 3.9, eq. 15).

    Gradient flow moves ``beta`` only inside row(X), so ``beta_ft = beta_sc + (I - P) beta_s`` and::

        T_ft = (1 - gamma)(2 cos(theta) - 1)      (gamma <= 1),        T_ft = 0   (gamma > 1)

    independent of the label noise, and exact at finite ``d`` with ``gamma = n/d`` (the bias factor
    is ``E ||(I-P) v||^2 = 1 - n/d``). Positive iff ``theta < pi/3`` (:data:`FINETUNE_BREAK_EVEN_ANGLE`).

    Args:
        theta: angle (radians); gamma: target sample ratio (> 0); broadcast.
    """
    th, g = np.broadcast_arrays(_array("theta", theta), _positive("gamma", gamma))
    return np.maximum(0.0, 1.0 - g) * (2.0 * np.cos(th) - 1.0)


def finetune_risk(theta: ArrayLike, gamma: ArrayLike, sigma: ArrayLike, d: int | None = None) -> FloatArray:
    """Risk of fine-tuning from an infinite source, ``R_ft = R_sc - T_ft`` (eqs. 8, 14-15).

    ``R_ft = (1 - gamma)_+ ||beta_s - beta_t||^2 + sigma^2 V(gamma) = (1-gamma)_+ (2 - 2 cos theta) +
    sigma^2 V``, with the scratch noise term ``V`` of :func:`scratch_risk` (limit, or exact with ``d``).

    Args:
        theta: angle (radians); gamma: target ratio (> 0, != 1); sigma: noise (>= 0); broadcast.
        d: dimension for the exact finite-size value, or ``None``.
    """
    return scratch_risk(gamma, sigma, d) - finetune_transferability(theta, gamma)


def balancedness_scale(gamma: ArrayLike, sigma: ArrayLike, d: int | None = None, layers: int = 2) -> FloatArray:
    """Scale ``c`` of the null-space component of fine-tuning fixed by conserved balancedness.

    Not in the paper (which has ``c = 1``, eq. 14); the derivation is in
    docs/derivations/finite_source_finetuning.md.

    Gradient flow conserves ``W_l^T W_l - W_{l+1} W_{l+1}^T`` (zero after pretraining from a vanishing
    init, so every layer stays rank one and balanced) and leaves ``(I-P) W_1`` unchanged. An
    end-to-end norm ``r`` then forces ``(I-P) beta_ft = r^{(L-1)/L} (I-P) beta_s``, so
    ``beta_ft = beta_sc + c (I-P) beta_s`` with ``c = ||beta_ft||^{(L-1)/L}`` solving::

        c^{2L/(L-1)} - a c^2 - b = 0,    a = ||(I-P) beta_s||^2 -> (1 - gamma)_+,    b = ||beta_sc||^2

    (``L = 2``: ``c^4 - a c^2 - b = 0``, ``c^2 = (a + sqrt(a^2 + 4 b)) / 2``), with ``b = E||X^+ y||^2``
    (:func:`min_norm_sq_norm`). ``c = 1`` iff ``sigma = 0``. With ``d`` the finite-size expectations of
    ``a`` and ``b`` are plugged in (exact in the proportional limit). For ``L > 2`` the root in
    ``x = c^2`` is found by Newton's method from ``x_0 = (1 + a + b)^{L-1}``, where the convex
    ``x^{L/(L-1)} - a x - b`` is positive, so the iterates decrease monotonically to the root.

    Args:
        gamma: target ratio (> 0, != 1); sigma: target noise (>= 0); broadcast. d: dimension or None.
        layers: depth ``L >= 2``.
    """
    b = min_norm_sq_norm(gamma, sigma, d)
    a = np.maximum(0.0, 1.0 - np.broadcast_to(_positive("gamma", gamma), b.shape))
    return np.sqrt(_balancedness_root(a, b, layers))


def _balancedness_root(a: FloatArray, b: FloatArray, layers: int) -> FloatArray:
    """The root ``x = c^2 > 0`` of ``x^{L/(L-1)} - a x - b = 0`` (closed form for ``L = 2``, else
    Newton from ``x_0 = (1 + a + b)^{L-1}``, where the convex left side is positive, so the
    iterates decrease monotonically to the root)."""
    check_int(layers, "layers", low=2)
    if layers == 2:
        return (a + np.sqrt(a**2 + 4.0 * b)) / 2.0
    p = layers / (layers - 1)
    x = (1.0 + a + b) ** (layers - 1)
    for _ in range(200):
        step = (x**p - a * x - b) / (p * x ** (p - 1) - a)
        x = x - step
        if np.all(np.abs(step) <= 1e-15 * x):
            break
    return x


def finetune_transferability_corrected(
    theta: ArrayLike, gamma: ArrayLike, sigma: ArrayLike, d: int | None = None, layers: int = 2,
    plug_in: bool = False,
) -> FloatArray:
    """Fine-tuning transferability with the balancedness scale ``c`` (correction to eq. 15).

    With ``beta_ft = beta_sc + c (I-P) beta_s`` (:func:`balancedness_scale`)::

        T_ft = (1 - gamma)_+ (2 c cos(theta) - c^2),     break-even cos(theta*) = c / 2

    which reduces to eq. (15) at ``sigma = 0`` (``c = 1``). Example: ``sigma = 0.2, gamma = 0.5``:
    ``c = 1.013``, ``theta* = 59.6 deg``.

    At finite ``d`` each data draw has its own ``c_i = c(a_i, b_i)`` (``a_i = ||(I-P) beta_s||^2``,
    ``b_i = ||X^+ y||^2``) and ``T_i = 2 c_i <(I-P) beta_s, beta_t> - c_i^2 a_i`` is not linear in the
    draw, so the expected moments plugged into ``c`` (``plug_in=True``) miss an ``O(1/d)`` term
    (-0.17/d at ``theta = pi/4, gamma = 0.5, sigma = 0.2``). By default, with ``d``, that term is added:
    the second-order (delta-method) expansion of ``E T_i`` over the exact finite-``d`` covariances of
    ``a_i``, ``b_i`` and the overlap (Haar row space, inverse-Wishart noise moments), error
    ``O(d^-2)``; derived in docs/derivations/finetune_finite_d.md. The expansion needs the fourth
    inverse-Wishart moment, finite for ``d - n > 3`` and growing without bound as ``d - n -> 3``, so it is
    applied for ``n <= d - 4`` (every integer ``n`` where it exists); for ``d - 4 < n < d`` the plug-in
    value is returned (there ``|T| <= 2 (1 - n/d) c`` is small, and the spike region is left out of
    comparisons anyway).

    Args:
        theta: angle (radians); gamma: target ratio (> 0, != 1); sigma: noise (>= 0); broadcast.
        d: dimension (finite-size expectation, see above) or ``None`` (proportional limit).
        layers: depth ``L >= 2``.
        plug_in: with ``d``, return the plug-in value ``T(E a, E b)`` without the ``O(1/d)`` term.
    """
    c = balancedness_scale(gamma, sigma, d, layers)
    th, g, c, s = np.broadcast_arrays(_array("theta", theta), _positive("gamma", gamma), c,
                                      _nonnegative("sigma", sigma))
    t = np.maximum(0.0, 1.0 - g) * (2.0 * c * np.cos(th) - c**2)
    if d is None or plug_in:
        return t
    return t + _finetune_second_order(th, g * d, d, s, c**2, layers)


def _finetune_second_order(theta: FloatArray, n: FloatArray, d: int, sigma: FloatArray, x: FloatArray,
                           layers: int) -> FloatArray:
    """The ``O(1/d)`` term of ``E T_i - T(E a, E b)`` (docs/derivations/finetune_finite_d.md).

    ``T(a, u, b) = 2 c u - c^2 a`` with ``x = c^2`` the root of ``x^p - a x - b`` (``p = L/(L-1)``),
    expanded to second order around ``(E a, E u, E b)``::

        E T - T(E a, E u, E b) = (1/2) sum_ij T_ij Cov(z_i, z_j),     z = (a, u, b)

    where ``u = <(I-P) beta_s, beta_t>``, ``b = 1 - a_t + 2 w + m`` (``a_t = ||(I-P) beta_t||^2``,
    ``w = <beta_t, X^+ eps>``, ``m = ||X^+ eps||^2``). With ``k = d - n`` and
    ``B = k n / (d (d-1) (d+2))`` (second moments of a Haar projection of rank ``k``)::

        Var a = Var a_t = 2 B (1 - 1/d),   Cov(a, a_t) = 2 B (cos^2 - 1/d),
        Cov(u, a) = Cov(u, a_t) = 2 B cos (1 - 1/d),
        Var w = sigma^2 n / (d (k - 1)),    Var m = 2 sigma^4 n (d - 1) / ((k - 1)^2 (k - 3))

    (``w`` and ``m`` are uncorrelated with the rest). Zero where ``n > d - 4`` (see the caller).
    Shapes: all arguments broadcast (already broadcast by the caller); returns their shape.
    """
    ok = n <= d - 4
    k = np.where(ok, d - n, 4.0)  # placeholder 4 keeps the masked entries finite
    nn = np.where(ok, n, 1.0)
    cos = np.cos(theta)
    a = k / d
    u = a * cos
    p = layers / (layers - 1)
    # implicit derivatives of the root x(a, b) of G = x^p - a x - b
    D = p * x ** (p - 1) - a
    xa, xb = x / D, 1.0 / D
    curv = p * (p - 1) * x ** (p - 2)
    Da, Db = curv * xa - 1.0, curv * xb
    xaa, xab, xbb = xa * (1.0 - Da) / D, -Da * xb / D, -Db * xb / D
    c = np.sqrt(x)
    ca, cb = xa / (2 * c), xb / (2 * c)
    caa = xaa / (2 * c) - xa**2 / (4 * c**3)
    cab = xab / (2 * c) - xa * xb / (4 * c**3)
    cbb = xbb / (2 * c) - xb**2 / (4 * c**3)
    t_aa = 2 * caa * u - xaa * a - 2 * xa
    t_ab = 2 * cab * u - xab * a - xb
    t_bb = 2 * cbb * u - xbb * a
    t_ua, t_ub = 2 * ca, 2 * cb
    B = k * nn / (d * (d - 1.0) * (d + 2.0))
    var_a = 2 * B * (1 - 1 / d)
    cov_a_at = 2 * B * (cos**2 - 1 / d)
    cov_u_a = 2 * B * cos * (1 - 1 / d)
    var_b = var_a + 4 * sigma**2 * nn / (d * (k - 1)) + 2 * sigma**4 * nn * (d - 1) / ((k - 1) ** 2 * (k - 3))
    term = 0.5 * (t_aa * var_a + t_bb * var_b) - t_ab * cov_a_at + t_ua * cov_u_a - t_ub * cov_u_a
    return np.where(ok, term, 0.0)


def finetune_break_even_angle(gamma: ArrayLike, sigma: ArrayLike = 0.0, layers: int = 2) -> FloatArray:
    """Angle below which fine-tuning beats scratch, ``theta* = arccos(c/2)`` (``pi/3`` at ``sigma = 0``).

    ``c`` is the balancedness scale (:func:`balancedness_scale`, proportional limit). Where
    ``c >= 2`` fine-tuning never helps and ``theta* = 0``.

    Args:
        gamma: target ratio in (0, 1); sigma: target noise (>= 0); broadcast. layers: depth ``L >= 2``.
    """
    g = _positive("gamma", gamma)
    if np.any(g >= 1):
        raise ConfigError(f"fine-tuning and scratch coincide for gamma >= 1; got gamma = {gamma!r}")
    return np.arccos(np.minimum(1.0, balancedness_scale(g, sigma, layers=layers) / 2.0))


# --------------------------------------------------------------------------------------------------
# finite, noisy source (Appendix C)


def finetune_transferability_finite_source(
    theta: ArrayLike, gamma: ArrayLike, gamma_s: ArrayLike, sigma_s: ArrayLike, d: int | None = None
) -> FloatArray:
    """Fine-tuning transferability from a finite noisy source (Thm C.1, eqs. 22-23).

    The source fit is ``beta_hat_s = X_s^+ y_s`` (``n_s = gamma_s d`` samples, noise ``sigma_s``) and
    ``beta_ft = beta_sc + (I-P) beta_hat_s``, so ``T_ft = (1 - gamma)_+ (2 E<beta_t, beta_hat_s> -
    E||beta_hat_s||^2)``, ``E<beta_t, beta_hat_s> = cos(theta) min(1, gamma_s)``. In the limit::

        T_ft = -(1 - gamma)_+ t,   t = gamma_s (1 - 2 cos theta) + sigma_s^2 gamma_s/(1 - gamma_s)  (gamma_s < 1)
                                   t = (1 - 2 cos theta) + sigma_s^2/(gamma_s - 1)                  (gamma_s > 1)

    With ``d`` the exact finite-size moments of ``beta_hat_s`` and ``1 - n/d`` are used (exact).
    Independent of the target noise.

    Args:
        theta: angle (radians); gamma: target ratio (> 0); gamma_s: source ratio (> 0, != 1);
        sigma_s: source noise (>= 0); all broadcast. d: dimension or ``None``.
    """
    sq_norm = min_norm_sq_norm(gamma_s, sigma_s, d)
    th, g, gs, sq_norm = np.broadcast_arrays(
        _array("theta", theta), _positive("gamma", gamma), _ratio("gamma_s", gamma_s), sq_norm
    )
    return np.maximum(0.0, 1.0 - g) * (2.0 * np.cos(th) * np.minimum(1.0, gs) - sq_norm)


def finetune_transferability_finite_source_corrected(
    theta: ArrayLike, gamma: ArrayLike, gamma_s: ArrayLike, sigma_s: ArrayLike, sigma: ArrayLike = 0.0,
    d: int | None = None, layers: int = 2,
) -> FloatArray:
    """Finite-source fine-tuning with the balancedness scale: what gradient descent converges to.

    Thm C.1 (:func:`finetune_transferability_finite_source`) takes ``beta_ft = beta_sc + (I-P)
    beta_hat_s``. Gradient flow conserves balancedness, so with a pretrained end-to-end norm
    ``r0 = ||beta_hat_s|| != 1`` the null-space part is rescaled, ``beta_ft = beta_sc + c (I-P)
    beta_hat_s`` with ``c = (r/r0)^{(L-1)/L}``, ``r = ||beta_ft||``. In ``x = c^2`` this is the
    population equation with ``b`` divided by ``r0^2`` (not in the paper; derived in
    docs/derivations/finite_source_finetuning.md)::

        x^{L/(L-1)} - (1 - gamma)_+ x - ||beta_sc||^2 / r0^2 = 0,
        T_ft = (1 - gamma)_+ (2 c cos(theta) min(1, gamma_s) - c^2 r0^2),

    with the expectations ``r0^2 = E||beta_hat_s||^2`` and ``||beta_sc||^2 = E||X^+ y||^2``
    (:func:`min_norm_sq_norm`) plugged in (exact in the proportional limit). ``c = 1`` recovers
    Thm C.1; unlike it, the result depends on the target noise ``sigma``. Example: ``gamma =
    gamma_s = 0.5``, ``sigma_s = 0.2``, ``sigma = 0``, ``theta = pi/4``: 0.0584 (Thm C.1: 0.0836).

    Args:
        theta: angle (radians); gamma: target ratio (> 0, != 1); gamma_s: source ratio (> 0, != 1);
        sigma_s, sigma: source and target noise (>= 0); all broadcast. d: dimension or ``None``.
        layers: depth ``L >= 2``.
    """
    r0_sq = min_norm_sq_norm(gamma_s, sigma_s, d)
    b = min_norm_sq_norm(gamma, sigma, d)
    th, g, gs, r0_sq, b = np.broadcast_arrays(
        _array("theta", theta), _positive("gamma", gamma), _ratio("gamma_s", gamma_s), r0_sq, b
    )
    a = np.maximum(0.0, 1.0 - g)
    x = _balancedness_root(a, b / r0_sq, layers)
    return a * (2.0 * np.sqrt(x) * np.cos(th) * np.minimum(1.0, gs) - x * r0_sq)


def finite_source_break_even_angle(gamma_s: ArrayLike, sigma_s: ArrayLike) -> FloatArray:
    """Break-even angle of fine-tuning from a finite source (App. C), proportional limit.

    ``cos(theta*) = (1 + sigma_s^2/(1 - gamma_s)) / 2`` (gamma_s < 1), ``(1 + sigma_s^2/(gamma_s - 1)) / 2``
    (gamma_s > 1); ``theta* = 0`` (never helps) where that exceeds 1. Example: ``(0.5, 0.2)`` and
    ``(1.5, 0.2)`` give ``cos theta* = 0.54`` (57.3 deg); ``(0.5, 0.3)`` gives 0.59 (53.8 deg).

    Args:
        gamma_s: source ratio (> 0, != 1); sigma_s: source noise (>= 0); broadcast.
    """
    gs, ss = np.broadcast_arrays(_ratio("gamma_s", gamma_s), _nonnegative("sigma_s", sigma_s))
    cos_star = (1.0 + ss**2 / np.abs(1.0 - gs)) / 2.0
    return np.arccos(np.minimum(1.0, cos_star))


def finite_source_overlap(theta: ArrayLike, gamma_s: ArrayLike, sigma_s: ArrayLike) -> FloatArray:
    """Cosine between the pretrained feature direction ``beta_hat_s/||beta_hat_s||`` and ``beta_t``.

    Not in the paper (derived in docs/derivations/finite_source_finetuning.md); proportional limit,
    where both moments self-average::

        rho = cos(theta) min(1, gamma_s) / sqrt(E||beta_hat_s||^2)

    with ``E||beta_hat_s||^2`` from :func:`min_norm_sq_norm`. ``rho -> cos(theta)`` for an infinite source.

    Args:
        theta: angle (radians); gamma_s: source ratio (> 0, != 1); sigma_s: source noise (>= 0).
    """
    sq_norm = min_norm_sq_norm(gamma_s, sigma_s)
    th, gs, sq_norm = np.broadcast_arrays(_array("theta", theta), _ratio("gamma_s", gamma_s), sq_norm)
    return np.cos(th) * np.minimum(1.0, gs) / np.sqrt(sq_norm)


def linear_transfer_risk_finite_source(
    theta: ArrayLike,
    n: ArrayLike,
    sigma: ArrayLike,
    gamma_s: ArrayLike,
    sigma_s: ArrayLike,
    lam: ArrayLike = 0.0,
    layers: int = 2,
) -> FloatArray:
    """Linear-transfer risk when the features were pretrained on a finite noisy source.

    Not in the paper; derived in docs/derivations/finite_source_finetuning.md.

    Pretraining an ``L``-layer balanced network on ``n_s = gamma_s d`` samples gives rank-one features
    ``W_1...W_{L-1} = s u v^T`` with ``u = beta_hat_s/||beta_hat_s||`` and
    ``s^2 = ||beta_hat_s||^{2(L-1)/L}``; a ridge ``lam`` on those features is a ridge ``lam/s^2`` on the unit
    feature ``X u``. With the overlap ``rho`` of :func:`finite_source_overlap` (angle
    ``arccos(rho)``) this is :func:`linear_transfer_risk`::

        R_lt = R_lt(theta' = arccos(rho), n, sigma, lam / ||beta_hat_s||^{2(L-1)/L})

    (proportional limit in the source; exact in ``n`` for the probe).

    Args:
        theta: angle (radians); n: target samples; sigma: target noise; gamma_s: source ratio
        (> 0, != 1); sigma_s: source noise; lam: probe ridge (>= 0); all broadcast. layers: ``L >= 2``.
    """
    if layers < 2:
        raise ConfigError(f"linear transfer needs layers >= 2, got {layers}")
    rho = finite_source_overlap(theta, gamma_s, sigma_s)
    feature_sq_norm = min_norm_sq_norm(gamma_s, sigma_s) ** ((layers - 1) / layers)
    return linear_transfer_risk(np.arccos(np.clip(rho, -1.0, 1.0)), n, sigma, _nonnegative("lam", lam) / feature_sq_norm)


# --------------------------------------------------------------------------------------------------
# phase boundaries and the divergence counterexample


class NegativeTransferInterval(NamedTuple):
    """The open interval ``(lower, upper)`` of ``gamma < 1`` where linear transfer loses to scratch.

    Where no such interval exists (``sigma >= 1 - |cos theta|``) ``lower == upper`` (an empty open
    interval) and ``exists`` is False. Arrays of the broadcast shape of ``(theta, sigma)``.
    """

    lower: FloatArray
    upper: FloatArray
    exists: NDArray[np.bool_]


def linear_transfer_negative_interval(theta: ArrayLike, sigma: ArrayLike) -> NegativeTransferInterval:
    """Negative-transfer band of linear transfer below ``gamma = 1`` (proportional limit, eq. 11).

    For ``gamma < 1``, ``T_lt < 0`` iff ``gamma_- < gamma < gamma_+``, the roots of::

        gamma^2 - (1 + cos^2 theta - sigma^2) gamma + cos^2 theta = 0

    real and inside ``(0, 1)`` iff ``sigma < 1 - |cos theta|`` (``theta > arccos(1 - sigma)``: 36.87 deg
    at ``sigma = 0.2``). At ``sigma = 0`` the band is ``(cos^2 theta, 1)``. Example: ``theta = pi/4,
    sigma = 0.2`` gives ``(0.549, 0.911)``.

    Args:
        theta: angle (radians); sigma: target noise (>= 0); broadcast.
    """
    th, s = np.broadcast_arrays(_array("theta", theta), _nonnegative("sigma", sigma))
    cos2 = np.cos(th) ** 2
    half_sum = (1.0 + cos2 - s**2) / 2.0
    exists = s < 1.0 - np.abs(np.cos(th))
    half_width = np.sqrt(np.where(exists, half_sum**2 - cos2, 0.0).clip(min=0.0))
    return NegativeTransferInterval(half_sum - half_width, half_sum + half_width, exists)


def linear_transfer_negative_threshold(theta: ArrayLike, sigma: ArrayLike) -> FloatArray:
    """Sample ratio above ``1`` beyond which linear transfer loses to scratch (proportional limit).

    For ``gamma > 1``, ``T_lt = sigma^2/(gamma - 1) - sin^2 theta < 0`` iff::

        gamma > 1 + sigma^2 / sin^2(theta)

    (``inf`` where ``sin theta = 0``). Example: ``theta = pi/4, sigma = 0.2``: 1.080; ``theta = pi/2``:
    1.040 (the anomalous positive band is ``(gamma_+, 1 + sigma^2)``).

    Args:
        theta: angle (radians); sigma: target noise (>= 0); broadcast.
    """
    th, s = np.broadcast_arrays(_array("theta", theta), _nonnegative("sigma", sigma))
    sin2 = np.sin(th) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sin2 > 0, 1.0 + s**2 / np.where(sin2 > 0, sin2, 1.0), np.inf)


def linear_transfer_noiseless_boundary(theta: ArrayLike) -> FloatArray:
    """Noiseless phase boundary of linear transfer: at ``sigma = 0`` it beats scratch iff ``gamma < cos^2 theta``.

    Args:
        theta: angle (radians), any shape. Returns ``cos^2(theta)``.
    """
    return np.cos(_array("theta", theta)) ** 2


def task_kl(theta: ArrayLike, sigma: ArrayLike) -> FloatArray:
    """KL divergence between the source and target task laws (App. A; Fig. 4a).

    ``p_f(x, y) = N(x; 0, I) N(y; beta^T x, sigma^2)`` with unit teachers at angle ``theta``::

        D_KL(p_s || p_t) = ||beta_s - beta_t||^2 / (2 sigma^2) = (1 - cos theta) / sigma^2

    monotone in ``theta`` on ``[0, pi]`` (0 / 7.32 / 25 / 50 at ``0, pi/4, pi/2, pi`` for ``sigma = 0.2``).

    Args:
        theta: angle (radians); sigma: label noise (> 0); broadcast.
    """
    th, s = np.broadcast_arrays(_array("theta", theta), _positive("sigma", sigma))
    return (1.0 - np.cos(th)) / s**2
