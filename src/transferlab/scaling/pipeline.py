"""The whole measurement: tidy losses -> effective data -> transfer law with intervals (+ surface fit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from transferlab.errors import ConfigError, FitError
from transferlab.scaling.chinchilla import ChinchillaFit, fit_chinchilla
from transferlab.scaling.effective_data import EffectiveDataTable, measure_effective_data
from transferlab.scaling.fit import FitResult, Method, bootstrap_transfer_law, fit_transfer_law
from transferlab.scaling.table import LossTable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["TransferAnalysis", "analyze_transfer"]


@dataclass(frozen=True)
class TransferAnalysis:
    """Everything :func:`analyze_transfer` found.

    Attributes:
        table: the input losses.
        effective: per fine-tuned run D_E, D_T, D(N) and status.
        fit: the transfer law with bootstrap intervals (``intervals`` empty when ``n_boot == 0``).
        surface: Chinchilla fit of the scratch runs ``L = E + A/N^a + B/D^b``.
    """

    table: LossTable
    effective: EffectiveDataTable
    fit: FitResult
    surface: ChinchillaFit

    def summary(self) -> dict[str, object]:
        """JSON-ready summary: the fit (:meth:`FitResult.to_dict`), point counts, the surface fit."""
        return {
            **self.fit.to_dict(),
            "point_status_counts": self.effective.counts(),
            "scratch_surface": self.surface.to_dict(),
        }


def analyze_transfer(
    table: LossTable | pd.DataFrame,
    *,
    method: Method = "direct",
    n_boot: int = 1000,
    resample: Literal["points", "model_size"] = "model_size",
    level: float = 0.95,
    seed: int = 0,
    low_data_fraction: float = 0.1,
    plateau_fraction: float = 0.99,
    extrapolation_decades: float = 0.0,
) -> TransferAnalysis:
    """Measure effective data transferred and fit ``D_T = k D_F**alpha N**beta``.

    Steps: :func:`~transferlab.scaling.effective_data.measure_effective_data` (scratch curve per
    size, inversion, censoring, low-data filter); the law on the ``ok`` points by ``method``, with
    ``n_boot`` bootstrap resamples (0 for none) of ``resample`` kind; a Chinchilla fit of all scratch
    runs. Raises :class:`FitError` naming the model sizes when fewer than two sizes keep usable points.

    ``table`` is a :class:`LossTable` or a ``pandas.DataFrame`` with the tidy columns
    ``model_size``, ``data_size``, ``regime``, ``loss`` (one row per run; validated by
    :meth:`LossTable.from_pandas`, so it gives the same result as the same rows read from CSV).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError(f"n_boot must be 0 (no intervals) or an integer >= 20; got {n_boot!r}")
    if not isinstance(table, LossTable):
        table = LossTable.from_pandas(table)
    effective = measure_effective_data(
        table, low_data_fraction=low_data_fraction, plateau_fraction=plateau_fraction,
        extrapolation_decades=extrapolation_decades,
    )
    d_f, n, d_t = effective.points()
    usable_sizes = np.unique(n)
    if usable_sizes.size < 2:
        per_size = ", ".join(
            f"N={size:g}: {int(np.sum(effective.usable & (effective.model_size == size)))} usable"
            for size in np.unique(effective.model_size)
        )
        raise FitError(
            f"too few model sizes with usable low-data points to fit the transfer law ({per_size}); "
            f"point statuses: {effective.counts()}"
        )
    if n_boot > 0:
        fit = bootstrap_transfer_law(d_f, n, d_t, method=method, n_boot=n_boot, resample=resample,
                                     level=level, seed=seed)
    else:
        fit = fit_transfer_law(d_f, n, d_t, method=method)
    scratch = table.subset("scratch")
    surface = fit_chinchilla(scratch.model_size, scratch.data_size, scratch.loss)
    return TransferAnalysis(table=table, effective=effective, fit=fit, surface=surface)
