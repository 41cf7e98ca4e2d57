"""Effective data from loss curves: scratch-curve model, inversion, censoring, D(N), low-data filter.

The measurement (Hernandez et al. 2021, App. B): for each model size N, model the early-stopped
from-scratch loss as a decreasing function of the data size, ``L_sc(N, D)``; for a fine-tuned run
``(N, D_F)`` with loss ``L_ft`` solve ``L_sc(N, D_E) = L_ft`` for the *effective data* ``D_E`` and
set ``D_T = D_E - D_F``.

Scratch-curve model (chosen here, and why)
------------------------------------------
Per model size we fit the four-parameter *generalised saturating power law*::

    L(D) = L_ref * (u + v * (D / D_ref)**(-q))**p,      u, v, q, p > 0

in log space (residual ``log L_model - log L_obs``: multiplicative noise), with ``D_ref`` and
``L_ref`` the geometric means of the size's data sizes and losses. Reasons:

* it is strictly decreasing in D for every parameter value, so the inversion is unique, and it
  has a closed-form inverse ``D = D_ref * (v / ((L/L_ref)**(1/p) - u))**(1/q)`` (no root finding);
* it saturates at the plateau ``L_inf = L_ref * u**p``, which real curves show and which ``D(N)``
  needs; a noisy point that dips below the plateau is *unreachable*, not extrapolated;
* it contains both common per-size forms exactly: ``p = 1`` gives ``E + A * D**(-q)`` (the
  Chinchilla slice) and ``q = 1`` gives Kaplan's ``[(N_c/N)**(a_N/a_D) + D_c/D]**a_D`` at fixed N,
  so noise-free synthetic curves are inverted to machine precision, while a parametric fit
  averages measurement noise (isotonic regression + PCHIP would interpolate every wiggle and
  invert flat plateaus badly).

Censoring: a fine-tuned loss outside the fitted curve's range over the observed scratch data sizes
(widened by ``extrapolation_decades``) gets a *bound*, never an extrapolated value: ``censored_low``
(``D_E`` below the smallest scratch D), ``censored_high`` (above the largest), ``unreachable`` (at
or below the plateau). ``D(N)`` is the smallest D with ``L(D) <= L_inf / plateau_fraction`` (0.99 in
the paper); fine-tuned points with ``D_F > low_data_fraction * D(N)`` (0.1 in the paper) are
marked ``high_data`` and left out of the law's fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares

from transferlab._optional import import_optional
from transferlab.errors import DataError, FitError
from transferlab.scaling.table import LossTable, warn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "STATUSES",
    "EffectiveDataTable",
    "ScratchCurve",
    "check_monotone_scratch",
    "fit_scratch_curve",
    "measure_effective_data",
]

Array = NDArray[np.float64]

#: Per-point status of an effective-data measurement; only ``ok`` points enter the law's fit.
STATUSES = ("ok", "no_transfer", "high_data", "censored_low", "censored_high", "unreachable")

_MIN_SCRATCH_POINTS = 5
_BOUNDS_LOG = (np.array([-60.0, -60.0, np.log(1e-3), np.log(1e-3)]),
               np.array([60.0, 60.0, np.log(20.0), np.log(20.0)]))


@dataclass(frozen=True)
class ScratchCurve:
    """A fitted from-scratch loss curve ``L(D) = L_ref * (u + v (D/D_ref)**(-q))**p`` of one size.

    Attributes:
        model_size: N.
        l_ref, d_ref: loss and data-size units (geometric means of the fitted points).
        log_u, log_v, q, p: the curve's parameters (``u = exp(log_u)``, ...).
        d_min, d_max: smallest and largest scratch data size observed.
        rms_log_residual: root-mean-square of ``log L_model - log L_obs`` over the fitted points.
        n_points: number of scratch runs fitted.
        status: ``"converged"`` or ``"hit_bound"`` (a parameter at its box bound).
    """

    model_size: float
    l_ref: float
    d_ref: float
    log_u: float
    log_v: float
    q: float
    p: float
    d_min: float
    d_max: float
    rms_log_residual: float
    n_points: int
    status: str

    @property
    def plateau(self) -> float:
        """Infinite-data loss ``L_inf = L_ref * u**p``."""
        return float(self.l_ref * np.exp(self.p * self.log_u))

    def loss(self, d: ArrayLike) -> Array:
        """``L(D)`` for data sizes ``d`` (> 0), any shape."""
        x = np.log(np.asarray(d, dtype=np.float64) / self.d_ref)
        return self.l_ref * np.exp(self.p * np.logaddexp(self.log_u, self.log_v - self.q * x))

    def data_for_loss(self, loss: ArrayLike) -> Array:
        """Inverse of :meth:`loss`: the D with ``L(D) = loss``; ``inf`` at or below the plateau.

        ``D = D_ref * (v / ((L/L_ref)**(1/p) - u))**(1/q)``, evaluated as
        ``log D = log D_ref + (log v - log u - log expm1(z)) / q`` with
        ``z = log(L/L_ref)/p - log u`` (stable near the plateau). Shape of ``loss``.
        """
        z = np.log(np.asarray(loss, dtype=np.float64) / self.l_ref) / self.p - self.log_u
        out = np.full(z.shape, np.inf)
        ok = z > 0
        zk = z[ok]
        big = zk > 30.0
        log_expm1 = np.empty_like(zk)  # log(expm1(z)); for large z, z + log1p(-exp(-z)) avoids overflow
        log_expm1[big] = zk[big] + np.log1p(-np.exp(-zk[big]))
        log_expm1[~big] = np.log(np.expm1(zk[~big]))
        out[ok] = self.d_ref * np.exp(np.minimum((self.log_v - self.log_u - log_expm1) / self.q, 700.0))
        return out

    def data_for_plateau(self, plateau_fraction: float = 0.99) -> float:
        """``D(N)``: the D at which ``L(D) = L_inf / plateau_fraction`` (0.99 in the paper)."""
        if not 0 < plateau_fraction < 1:
            raise DataError(f"plateau_fraction must lie in (0, 1); got {plateau_fraction}")
        return float(self.data_for_loss(self.plateau / plateau_fraction))


def check_monotone_scratch(
    d: ArrayLike, loss: ArrayLike, *, model_size: float, rise_tolerance: float = 0.05
) -> None:
    """Raise :class:`DataError` if the scratch loss *rises* with data by more than ``rise_tolerance``.

    Early-stopped from-scratch loss should not increase with data; measurement noise makes it
    wiggle by fractions of a percent. With ``d``, ``loss`` of shape ``(n_points,)``, the rise is
    ``max_j L_j / min_{i: D_i < D_j} L_i - 1`` (relative, any earlier point); the default 5 % is ten
    times the 0.5 % noise the inversion is built to tolerate.
    """
    d = np.asarray(d, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    order = np.argsort(d, kind="stable")
    d, loss = d[order], loss[order]
    # running minimum over strictly smaller data sizes
    uniq, first = np.unique(d, return_index=True)
    group_min = np.minimum.reduceat(loss, first)
    prior_min = np.concatenate([[np.inf], np.minimum.accumulate(group_min)[:-1]])
    group_of = np.searchsorted(uniq, d)
    rise = loss / prior_min[group_of] - 1.0
    j = int(np.argmax(rise))
    if rise[j] > rise_tolerance:
        i = int(np.argmin(np.where(d < d[j], loss, np.inf)))
        raise DataError(
            f"scratch loss of model size {model_size:g} rises with data far beyond noise: "
            f"{loss[i]:.6g} at D={d[i]:g} but {loss[j]:.6g} at D={d[j]:g} (+{100 * rise[j]:.1f} %, "
            f"tolerance {100 * rise_tolerance:.1f} %); early-stopped scratch losses must not increase with D"
        )


def _model_log_loss(theta: Array, x: Array) -> Array:
    """``log(L/L_ref)`` at ``x = log(D/D_ref)`` for ``theta = (log u, log v, log q, log p)``."""
    log_u, log_v, log_q, log_p = theta
    return np.exp(log_p) * np.logaddexp(log_u, log_v - np.exp(log_q) * x)


def _model_jacobian(theta: Array, x: Array) -> Array:
    """``(n_points, 4)`` Jacobian of :func:`_model_log_loss` with respect to ``theta``."""
    log_u, log_v, log_q, log_p = theta
    p, q = np.exp(log_p), np.exp(log_q)
    s = np.logaddexp(log_u, log_v - q * x)
    w_u = np.exp(log_u - s)
    w_v = np.exp(log_v - q * x - s)
    return np.column_stack([p * w_u, p * w_v, -p * w_v * q * x, p * s])


def _initial_guesses(x: Array, y: Array) -> list[Array]:
    """Starts on a (q, p) grid; for each, ``(L/L_ref)**(1/p) = u + v exp(-q x)`` is linear in (u, v)."""
    guesses = []
    for q in (0.2, 0.5, 1.0, 2.0):
        basis = np.exp(-q * x)
        for p in (0.05, 0.1, 0.3, 1.0):
            if np.max(np.abs(y)) / p > 300.0:  # losses spanning many decades: skip overflowing starts
                continue
            target = np.exp(y / p)
            design = np.column_stack([np.ones_like(x), basis])
            (u, v), *_ = np.linalg.lstsq(design, target, rcond=None)
            u = min(max(u, 1e-6 * target.min()), 0.9 * target.min())
            if v <= 0:
                v = max((target.max() - u) / basis.max(), 1e-6)
            guesses.append(np.clip(np.array([np.log(u), np.log(v), np.log(q), np.log(p)]), *_BOUNDS_LOG))
    costs = [np.sum((_model_log_loss(g, x) - y) ** 2) for g in guesses]
    order = np.argsort(costs)
    return [guesses[i] for i in order[:2]]


def fit_scratch_curve(d: ArrayLike, loss: ArrayLike, *, model_size: float, rise_tolerance: float = 0.05) -> ScratchCurve:
    """Fit the generalised saturating power law to one model size's scratch runs.

    Args:
        d: scratch data sizes, shape ``(n_points,)``, > 0; at least 5 distinct values.
        loss: early-stopped losses, shape ``(n_points,)``, > 0.
        model_size: N (used in messages and stored on the curve).
        rise_tolerance: see :func:`check_monotone_scratch`.

    Minimises ``sum_i (log L_model(D_i) - log L_i)**2`` over ``(log u, log v, log q, log p)`` with
    Levenberg-Marquardt (analytic Jacobian; bounded trust region if it leaves the box) from the best
    two of 16 linearised starts.
    """
    d = np.asarray(d, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    n_distinct = np.unique(d).size
    if n_distinct < _MIN_SCRATCH_POINTS:
        raise DataError(
            f"model size {model_size:g} has scratch runs at {n_distinct} distinct data size(s); "
            f"the scratch-curve fit needs at least {_MIN_SCRATCH_POINTS}"
        )
    check_monotone_scratch(d, loss, model_size=model_size, rise_tolerance=rise_tolerance)
    d_ref = float(np.exp(np.mean(np.log(d))))
    l_ref = float(np.exp(np.mean(np.log(loss))))
    x = np.log(d / d_ref)
    y = np.log(loss / l_ref)

    def resid(th: Array) -> Array:
        return _model_log_loss(th, x) - y

    def jac(th: Array) -> Array:
        return _model_jacobian(th, x)

    lo, hi = _BOUNDS_LOG
    best = None
    for start in _initial_guesses(x, y):
        # unbounded Levenberg-Marquardt first (fast); the bounded trust region if it leaves the box
        # (its trial steps may overflow; such steps are rejected, so the overflow is not reported)
        with np.errstate(over="ignore", invalid="ignore"):
            res = least_squares(resid, start, jac=jac, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15,
                                max_nfev=2000)
        if not (np.isfinite(res.cost) and np.all(np.isfinite(res.x)) and np.all((res.x >= lo) & (res.x <= hi))):
            res = least_squares(resid, start, jac=jac, bounds=_BOUNDS_LOG, method="trf",
                                xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=3000)
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    if not np.all(np.isfinite(best.x)):  # pragma: no cover - defensive
        raise FitError(f"scratch-curve fit for model size {model_size:g} produced non-finite parameters")
    at_bound = np.any(np.isclose(best.x, lo, atol=1e-8) | np.isclose(best.x, hi, atol=1e-8))
    rms = float(np.sqrt(np.mean(best.fun**2)))
    curve = ScratchCurve(
        model_size=float(model_size), l_ref=l_ref, d_ref=d_ref,
        log_u=float(best.x[0]), log_v=float(best.x[1]), q=float(np.exp(best.x[2])), p=float(np.exp(best.x[3])),
        d_min=float(d.min()), d_max=float(d.max()), rms_log_residual=rms, n_points=int(d.size),
        status="hit_bound" if at_bound else "converged",
    )
    if rms > 0.02:
        warn(
            f"scratch curve of model size {model_size:g} fits poorly (rms relative residual "
            f"{100 * rms:.1f} %); check the runs of this size"
        )
    return curve


#: The per-point columns of :meth:`EffectiveDataTable.to_pandas` (``status`` last).
_POINT_COLUMNS = (
    "model_size", "data_size", "loss", "effective_data", "transferred_data", "data_for_plateau", "status",
)


@dataclass(frozen=True)
class EffectiveDataTable:
    """Effective data of every fine-tuned run; arrays of shape ``(n_finetune,)``.

    Attributes:
        model_size: N of each fine-tuned run.
        data_size: D_F.
        loss: fine-tuned loss L_ft.
        effective_data: D_E where measured; where the fine-tuned loss lies outside the scratch
            curve's range, the bound instead (``censored_low``: an upper bound, ``censored_high`` /
            ``unreachable``: a lower bound; ``high_data`` points keep whichever applies).
        transferred_data: ``D_E - D_F`` (same caveat for censored points).
        data_for_plateau: D(N) of the run's model size.
        status: one of :data:`STATUSES` per point.
        curves: model size -> fitted :class:`ScratchCurve`.
        low_data_fraction, plateau_fraction: the filter settings used.
    """

    model_size: Array
    data_size: Array
    loss: Array
    effective_data: Array
    transferred_data: Array
    data_for_plateau: Array
    status: NDArray[np.str_]
    curves: Mapping[float, ScratchCurve] = field(default_factory=dict)
    low_data_fraction: float = 0.1
    plateau_fraction: float = 0.99

    @property
    def usable(self) -> NDArray[np.bool_]:
        """Mask of the points that enter the law's fit (status ``ok``)."""
        return self.status == "ok"

    def counts(self) -> dict[str, int]:
        """Number of points per status."""
        return {s: int(np.sum(self.status == s)) for s in STATUSES}

    def points(self) -> tuple[Array, Array, Array]:
        """``(D_F, N, D_T)`` of the usable points, each ``(n_usable,)``."""
        m = self.usable
        return self.data_size[m], self.model_size[m], self.transferred_data[m]

    def to_pandas(self) -> pd.DataFrame:
        """The per-point arrays as a ``pandas.DataFrame`` of shape ``(n_finetune, 7)``.

        Columns are the array attributes: ``model_size``, ``data_size``, ``loss``,
        ``effective_data``, ``transferred_data``, ``data_for_plateau``, ``status``;
        ``low_data_fraction`` and ``plateau_fraction`` travel in ``frame.attrs``. The fitted
        ``curves`` are not tabular and are left out. Needs pandas (``pip install pandas``).
        """
        pd = import_optional("pandas", "EffectiveDataTable.to_pandas", package="pandas", extra="pandas")
        frame = pd.DataFrame({name: getattr(self, name) for name in _POINT_COLUMNS})
        frame.attrs.update(low_data_fraction=self.low_data_fraction, plateau_fraction=self.plateau_fraction)
        return frame

    @classmethod
    def from_pandas(cls, frame: pd.DataFrame) -> EffectiveDataTable:
        """A table from a DataFrame with the columns of :meth:`to_pandas` (shape ``(n_finetune, 7)``).

        ``curves`` is empty (a DataFrame does not carry the fits); the two fractions come from
        ``frame.attrs`` when present, else the defaults. Raises :class:`DataError` for a missing
        column or an unknown status.
        """
        missing = [c for c in _POINT_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(f"DataFrame is missing column(s) {', '.join(repr(c) for c in missing)}")
        status = np.asarray([str(s) for s in frame["status"]], dtype=np.str_)
        unknown = sorted(set(status.tolist()) - set(STATUSES))
        if unknown:
            raise DataError(f"column 'status' has unknown value(s) {unknown}; known: {', '.join(STATUSES)}")
        arrays = {name: np.asarray(frame[name].to_numpy(), dtype=np.float64) for name in _POINT_COLUMNS[:-1]}
        fractions = {k: float(frame.attrs[k]) for k in ("low_data_fraction", "plateau_fraction") if k in frame.attrs}
        return cls(**arrays, status=status, **fractions)

    def rows(self) -> list[dict[str, float | str]]:
        """One flat dict per fine-tuned run (for reports)."""
        return [
            {"model_size": float(n), "data_size": float(df), "loss": float(l), "effective_data": float(de),
             "transferred_data": float(dt), "D(N)": float(dn), "status": str(s)}
            for n, df, l, de, dt, dn, s in zip(
                self.model_size, self.data_size, self.loss, self.effective_data,
                self.transferred_data, self.data_for_plateau, self.status)
        ]


def measure_effective_data(
    table: LossTable,
    *,
    low_data_fraction: float = 0.1,
    plateau_fraction: float = 0.99,
    extrapolation_decades: float = 0.0,
    rise_tolerance: float = 0.05,
) -> EffectiveDataTable:
    """Fit a scratch curve per model size and invert it at every fine-tuned loss.

    Args:
        table: tidy losses with both regimes; every fine-tuned model size needs >= 5 scratch data sizes.
        low_data_fraction: keep points with ``D_F <= low_data_fraction * D(N)`` (paper: 0.1).
        plateau_fraction: D(N) is where the scratch loss reaches ``L_inf / plateau_fraction`` (0.99).
        extrapolation_decades: how far (in decades of D) beyond the observed scratch range an
            inversion is still accepted; 0 (default) never extrapolates.
        rise_tolerance: largest relative rise of scratch loss with data accepted as noise.

    Returns:
        An :class:`EffectiveDataTable`; censored points are counted and warned about (naming the
        model sizes), never silently extrapolated.
    """
    if not 0 < low_data_fraction <= 1:
        raise DataError(f"low_data_fraction must lie in (0, 1]; got {low_data_fraction}")
    if extrapolation_decades < 0:
        raise DataError(f"extrapolation_decades must be >= 0; got {extrapolation_decades}")
    scratch = table.subset("scratch")
    fine = table.subset("finetune")
    if len(fine.loss) == 0:
        raise DataError("the table has no 'finetune' rows; nothing to measure")
    scratch_sizes = set(scratch.model_sizes().tolist())
    missing = [n for n in fine.model_sizes().tolist() if n not in scratch_sizes]
    if missing:
        raise DataError(
            "model size(s) " + ", ".join(f"{n:g}" for n in missing)
            + " have fine-tuned runs but no scratch runs to measure effective data against"
        )

    n_fine = fine.loss.size
    d_e = np.empty(n_fine)
    d_n = np.empty(n_fine)
    status = np.empty(n_fine, dtype="<U13")
    curves: dict[float, ScratchCurve] = {}
    widen = 10.0**extrapolation_decades
    for n in fine.model_sizes():
        sm = scratch.model_size == n
        curve = fit_scratch_curve(scratch.data_size[sm], scratch.loss[sm], model_size=float(n),
                                  rise_tolerance=rise_tolerance)
        curves[float(n)] = curve
        dn = curve.data_for_plateau(plateau_fraction)
        if dn > curve.d_max * widen:
            warn(
                f"D(N) of model size {n:g} ({dn:.3g}) lies beyond its largest scratch data size "
                f"({curve.d_max:.3g}); the low-data filter relies on the extrapolated plateau"
            )
        fm = fine.model_size == n
        lo_d, hi_d = curve.d_min / widen, curve.d_max * widen
        loss_hi, loss_lo = curve.loss(lo_d), curve.loss(hi_d)
        l_ft = fine.loss[fm]
        raw = curve.data_for_loss(l_ft)  # inf at or below the plateau
        st = np.full(l_ft.shape, "ok", dtype="<U13")
        st[l_ft > loss_hi] = "censored_low"
        st[l_ft < loss_lo] = "censored_high"
        st[~np.isfinite(raw)] = "unreachable"
        de = np.select([st == "ok", st == "censored_low"], [raw, np.full(raw.shape, lo_d)], default=hi_d)
        st[fine.data_size[fm] > low_data_fraction * dn] = "high_data"
        st[(st == "ok") & (de <= fine.data_size[fm])] = "no_transfer"
        d_e[fm], d_n[fm], status[fm] = de, dn, st

    result = EffectiveDataTable(
        model_size=fine.model_size, data_size=fine.data_size, loss=fine.loss, effective_data=d_e,
        transferred_data=d_e - fine.data_size, data_for_plateau=d_n, status=status, curves=curves,
        low_data_fraction=low_data_fraction, plateau_fraction=plateau_fraction,
    )
    censored = np.isin(status, ("censored_low", "censored_high", "unreachable"))
    if censored.any():
        per_size = {float(n): int(np.sum(censored & (fine.model_size == n))) for n in np.unique(fine.model_size[censored])}
        warn(
            f"{int(censored.sum())} low-data fine-tuned point(s) lie outside their scratch curve's range and "
            "are censored (reported as bounds, left out of the fit): "
            + ", ".join(f"N={n:g}: {c}" for n, c in per_size.items())
        )
    return result
