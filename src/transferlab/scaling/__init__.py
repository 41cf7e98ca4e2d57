"""Scaling laws for transfer (Hernandez, Kaplan, Henighan, McCandlish 2021).

``D_T = k * D_F**alpha * N**beta``: the effective data transferred by pretraining to a model of N
parameters fine-tuned on D_F units of target data. This package holds

* the law's algebra (:mod:`~transferlab.scaling.law`): D_T, multiplier, fraction from transfer,
  critical size N*, the unified loss of eq. 6.1, Table-1 constants;
* effective data from loss curves (:mod:`~transferlab.scaling.effective_data`): a monotone scratch
  curve per model size, inversion, censoring, D(N) and the low-data filter;
* fits (:mod:`~transferlab.scaling.fit`): direct least squares, Huber, the paper's fit-the-fits,
  bootstrap intervals by points or by model size; a Chinchilla surface fit
  (:mod:`~transferlab.scaling.chinchilla`);
* synthetic surfaces with known (k, alpha, beta) (:mod:`~transferlab.scaling.synthetic`), the tidy
  CSV format (:mod:`~transferlab.scaling.io`) and the end-to-end :func:`analyze_transfer`.

Figures live in :mod:`transferlab.scaling.figures` (imported on first use; it loads matplotlib).
"""

from transferlab.scaling.chinchilla import ChinchillaFit, chinchilla_loss, fit_chinchilla
from transferlab.scaling.effective_data import (
    STATUSES,
    EffectiveDataTable,
    ScratchCurve,
    check_monotone_scratch,
    fit_scratch_curve,
    measure_effective_data,
)
from transferlab.scaling.fit import (
    FIT_METHODS,
    FitResult,
    bootstrap_transfer_law,
    fit_direct,
    fit_huber,
    fit_the_fits,
    fit_transfer_law,
)
from transferlab.scaling.io import REQUIRED_COLUMNS, read_losses_csv, write_losses_csv
from transferlab.scaling.law import (
    KAPLAN_WEBTEXT2_JOINT,
    TEXT_CODE_TO_PYTHON,
    TEXT_TO_PYTHON,
    KaplanLoss,
    TransferLaw,
    critical_model_size,
    effective_data_size,
    effective_data_multiplier,
    fraction_from_transfer,
    transferred_data,
    unified_transfer_loss,
)
from transferlab.scaling.pipeline import TransferAnalysis, analyze_transfer
from transferlab.scaling.synthetic import KAPLAN_WEBTEXT2_SEPARATE, SyntheticSurface, synthetic_losses
from transferlab.scaling.table import REGIMES, LossTable, ScalingWarning

__all__ = [
    "FIT_METHODS",
    "KAPLAN_WEBTEXT2_JOINT",
    "KAPLAN_WEBTEXT2_SEPARATE",
    "REGIMES",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "TEXT_CODE_TO_PYTHON",
    "TEXT_TO_PYTHON",
    "ChinchillaFit",
    "EffectiveDataTable",
    "FitResult",
    "KaplanLoss",
    "LossTable",
    "ScalingWarning",
    "ScratchCurve",
    "SyntheticSurface",
    "TransferAnalysis",
    "TransferLaw",
    "analyze_transfer",
    "bootstrap_transfer_law",
    "check_monotone_scratch",
    "chinchilla_loss",
    "critical_model_size",
    "effective_data_size",
    "effective_data_multiplier",
    "fit_chinchilla",
    "fit_direct",
    "fit_huber",
    "fit_scratch_curve",
    "fit_the_fits",
    "fit_transfer_law",
    "fraction_from_transfer",
    "measure_effective_data",
    "read_losses_csv",
    "synthetic_losses",
    "transferred_data",
    "unified_transfer_loss",
    "write_losses_csv",
]
