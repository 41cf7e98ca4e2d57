"""transferlab.theory: closed forms (vectorised float64 numpy) and phase boundaries.

Paper 1, "Features are fate" (deep linear transfer): :mod:`transferlab.theory.fate`.
"""

from transferlab.theory.fate import (
    FINETUNE_BREAK_EVEN_ANGLE,
    NegativeTransferInterval,
    balancedness_scale,
    finetune_break_even_angle,
    finetune_risk,
    finetune_transferability,
    finetune_transferability_corrected,
    finetune_transferability_finite_source,
    finite_source_break_even_angle,
    finite_source_overlap,
    linear_transfer_negative_interval,
    linear_transfer_negative_threshold,
    linear_transfer_noiseless_boundary,
    linear_transfer_risk,
    linear_transfer_risk_finite_source,
    linear_transfer_risk_ridge,
    linear_transferability,
    min_norm_sq_norm,
    scratch_risk,
    task_kl,
)

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
