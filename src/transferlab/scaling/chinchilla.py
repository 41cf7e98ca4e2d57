"""Chinchilla-style fit of a from-scratch loss surface ``L(N, D) = E + A / N**a + B / D**b``.

Following Hoffmann et al. (2022, approach 3): parameters ``(log E, log A, log B, a, b)``; the model's
log loss is ``LSE(log A - a log N, log B - b log D, log E)`` (log-sum-exp, exact and stable); the
objective is Huber's loss with small scale ``delta`` (1e-3) on ``log L_model - log L_obs``, so a few
bad runs do not drag the surface. Multi-start: on a grid of exponent starts ``(a, b)`` the model is
linear in ``(E, A, B)``, solved by non-negative least squares; the best starts are refined by
bounded trust-region least squares and the lowest objective wins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares, nnls

from transferlab.errors import ConfigError, DataError, FitError

__all__ = ["ChinchillaFit", "chinchilla_loss", "fit_chinchilla"]

Array = NDArray[np.float64]

_EXPONENT_BOUNDS = (1e-3, 3.0)
_LOG_BOUNDS = (-40.0, 40.0)
_START_EXPONENTS = (0.05, 0.15, 0.3, 0.5, 0.8)


def chinchilla_loss(n: ArrayLike, d: ArrayLike, e: float, a_coef: float, b_coef: float, a: float, b: float) -> Array:
    """``L(N, D) = E + A / N**a + B / D**b`` for broadcastable ``n``, ``d`` (> 0); broadcast shape."""
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return e + a_coef * np.exp(-a * np.log(n)) + b_coef * np.exp(-b * np.log(d))


@dataclass(frozen=True)
class ChinchillaFit:
    """A fitted ``L(N, D) = E + A/N**a + B/D**b``.

    Attributes:
        e, a_coef, b_coef: ``E``, ``A``, ``B`` (> 0).
        a, b: the exponents.
        status: ``"converged"``, ``"hit_bound"`` or ``"too_few_points"`` (< 10 runs or < 3 sizes).
        n_points: runs fitted.
        rms_log_residual: root-mean-square of ``log L_model - log L_obs``.
        delta: the Huber scale used.
    """

    e: float
    a_coef: float
    b_coef: float
    a: float
    b: float
    status: str
    n_points: int
    rms_log_residual: float
    delta: float

    def loss(self, n: ArrayLike, d: ArrayLike) -> Array:
        """Predicted loss for broadcastable ``n``, ``d``."""
        return chinchilla_loss(n, d, self.e, self.a_coef, self.b_coef, self.a, self.b)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _log_model(theta: Array, log_n: Array, log_d: Array) -> Array:
    log_e, log_a, log_b, a, b = theta
    return np.logaddexp(np.logaddexp(log_a - a * log_n, log_b - b * log_d), log_e)


def fit_chinchilla(
    n: ArrayLike, d: ArrayLike, loss: ArrayLike, *, delta: float = 1e-3, n_refine: int = 4
) -> ChinchillaFit:
    """Fit ``L(N, D) = E + A/N**a + B/D**b`` to scratch runs.

    Args:
        n, d, loss: model sizes, data sizes and losses, each ``(n_points,)``, finite and > 0.
        delta: Huber scale on the log-loss residual (Hoffmann et al. used 1e-3).
        n_refine: how many of the 25 linearised starts are refined by nonlinear least squares.

    Raises:
        DataError: non-finite or non-positive inputs (naming the model size).
        FitError: fewer than 5 runs, or fewer than 2 distinct N or D.
    """
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (n, d, loss)]
    if len({a.size for a in arrays}) != 1:
        raise DataError(f"N, D and loss have different lengths: {[a.size for a in arrays]}")
    n, d, loss = arrays
    for name, arr in zip(("N", "D", "loss"), arrays):
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name} must be finite and > 0: run {i} (model size {n[i]:g}) has {float(arr[i])!r}")
    if not (np.isfinite(delta) and delta > 0):
        raise ConfigError(f"delta must be finite and > 0; got {delta}")
    if n.size < 5 or np.unique(n).size < 2 or np.unique(d).size < 2:
        raise FitError(
            f"too few runs for the Chinchilla surface: {n.size} runs, {np.unique(n).size} model sizes, "
            f"{np.unique(d).size} data sizes; need >= 5 runs with >= 2 of each"
        )
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    starts = []
    for a in _START_EXPONENTS:
        for b in _START_EXPONENTS:
            basis = np.column_stack([np.ones_like(n), np.exp(-a * log_n), np.exp(-b * log_d)])
            scale = basis.max(axis=0)
            coef, _ = nnls(basis / scale, loss)
            coef = np.maximum(coef / scale, 1e-6 * loss.min() / scale)
            theta = np.concatenate([np.log(coef), [a, b]])
            cost = np.sum((_log_model(theta, log_n, log_d) - log_l) ** 2)
            starts.append((cost, theta))
    starts.sort(key=lambda item: item[0])
    lower = np.array([_LOG_BOUNDS[0]] * 3 + [_EXPONENT_BOUNDS[0]] * 2)
    upper = np.array([_LOG_BOUNDS[1]] * 3 + [_EXPONENT_BOUNDS[1]] * 2)
    best = None
    for _, theta in starts[:n_refine]:
        res = least_squares(
            lambda th: _log_model(th, log_n, log_d) - log_l, np.clip(theta, lower, upper),
            bounds=(lower, upper), loss="huber", f_scale=delta, method="trf",
            xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=5000,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    if not np.all(np.isfinite(best.x)):  # pragma: no cover - defensive
        raise FitError("Chinchilla fit produced non-finite parameters")
    at_bound = np.any(np.isclose(best.x, lower, atol=1e-9) | np.isclose(best.x, upper, atol=1e-9))
    status = "hit_bound" if at_bound else "converged" if best.status > 0 else "not_converged"
    if status == "converged" and (n.size < 10 or np.unique(n).size < 3):
        status = "too_few_points"
    resid = _log_model(best.x, log_n, log_d) - log_l
    return ChinchillaFit(
        e=float(np.exp(best.x[0])), a_coef=float(np.exp(best.x[1])), b_coef=float(np.exp(best.x[2])),
        a=float(best.x[3]), b=float(best.x[4]), status=status, n_points=int(n.size),
        rms_log_residual=float(np.sqrt(np.mean(resid**2))), delta=float(delta),
    )
