"""Synthetic benchmark surfaces with a known transfer law, for checking a fitting pipeline.

From-scratch losses follow a Kaplan-form surface ``L(N, D) = [(N_c/N)**(a_N/a_D) + D_c/D]**a_D``;
fine-tuned losses are the same surface at the effective data,
``L_ft(N, D_F) = L(N, D_F + k D_F**alpha N**beta)`` (eq. 6.1 with injected ``k, alpha, beta``).
Each loss is multiplied by ``exp(noise * eps)``, ``eps ~ N(0, 1)`` independent per run, so ``noise``
is the relative (multiplicative) loss noise, e.g. 0.002 for 0.2 %.

Defaults: Kaplan et al. (2020)'s separate-fit WebText2 constants (a_N = 0.076, a_D = 0.095,
N_c = 8.8e13, D_c = 5.4e13), the text -> Python law of Hernandez et al. (2021, Table 1:
1.9e4, 0.18, 0.38), N from 1e5 to 1e9, D_F from 1e4 to 1e7; scratch runs on a data grid wide
enough (1e3 .. 1e11) to cover every effective data size and every D(N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext

import numpy as np

from transferlab.errors import ConfigError
from transferlab.scaling.law import TEXT_TO_PYTHON, KaplanLoss, TransferLaw, unified_transfer_loss
from transferlab.scaling.table import LossTable

__all__ = ["KAPLAN_WEBTEXT2_SEPARATE", "SyntheticSurface", "log_grid", "synthetic_losses"]

#: Kaplan et al. (2020) separate-fit WebText2 constants (L(N) and L(D) fitted separately). They only
#: need to give a realistic Kaplan-form surface: the tests recover the injected law, not these values.
KAPLAN_WEBTEXT2_SEPARATE = KaplanLoss(alpha_n=0.076, alpha_d=0.095, n_c=8.8e13, d_c=5.4e13)


def log_grid(start: float, stop: float, num: int) -> tuple[float, ...]:
    """``num`` log-spaced values from ``start`` to ``stop`` (both > 0), the same on every machine.

    The exponents are numpy's ``linspace`` (basic IEEE arithmetic: the same everywhere); each power
    of ten is computed in 40-digit decimal arithmetic and rounded once to the nearest double.
    ``numpy.logspace`` differs between CPUs by one ulp (``10**6.5`` is 3162277.6601683795 or
    3162277.660168379 depending on the vector math library), which would change the grid a seed
    regenerates.
    """
    exponents = np.linspace(math.log10(start), math.log10(stop), num)
    with localcontext(prec=40):
        return tuple(float(Decimal(10) ** Decimal(float(e))) for e in exponents)


@dataclass(frozen=True)
class SyntheticSurface:
    """What to generate.

    Attributes:
        law: the injected transfer law (k, alpha, beta).
        kaplan: the from-scratch surface.
        model_sizes: N values, shape ``(n_sizes,)``.
        scratch_data_sizes: D grid of the scratch runs (same for every N), ``(n_scratch,)``.
        finetune_data_sizes: D_F grid of the fine-tuned runs, ``(n_finetune,)``.
        noise: relative loss noise (standard deviation of the log loss), >= 0.
    """

    law: TransferLaw = TEXT_TO_PYTHON
    kaplan: KaplanLoss = KAPLAN_WEBTEXT2_SEPARATE
    model_sizes: tuple[float, ...] = log_grid(1e5, 1e9, 9)
    scratch_data_sizes: tuple[float, ...] = log_grid(1e3, 1e11, 25)
    finetune_data_sizes: tuple[float, ...] = log_grid(1e4, 1e7, 13)
    noise: float = 0.002

    def __post_init__(self) -> None:
        if not (np.isfinite(self.noise) and self.noise >= 0):
            raise ConfigError(f"noise must be finite and >= 0; got {self.noise}")
        for name in ("model_sizes", "scratch_data_sizes", "finetune_data_sizes"):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.ndim != 1 or values.size == 0 or np.any(~np.isfinite(values) | (values <= 0)):
                raise ConfigError(f"{name} must be a non-empty list of finite positive numbers")


def synthetic_losses(surface: SyntheticSurface | None = None, *, seed: int | np.random.SeedSequence = 0) -> LossTable:
    """A tidy :class:`LossTable` of scratch and fine-tuned losses drawn from ``surface``.

    Rows: every (N, D) of the scratch grid with regime ``"scratch"``, then every (N, D_F) with regime
    ``"finetune"``; ``n_sizes * (n_scratch + n_finetune)`` rows in all. Noise comes from
    ``numpy.random.default_rng(seed)`` only.
    """
    s = surface or SyntheticSurface()
    n = np.asarray(s.model_sizes, dtype=np.float64)
    d = np.asarray(s.scratch_data_sizes, dtype=np.float64)
    d_f = np.asarray(s.finetune_data_sizes, dtype=np.float64)
    ns, ds = np.meshgrid(n, d, indexing="ij")
    nf, dfs = np.meshgrid(n, d_f, indexing="ij")
    loss_sc = s.kaplan.loss(ns, ds).ravel()
    loss_ft = unified_transfer_loss(nf, dfs, s.law, s.kaplan).ravel()
    rng = np.random.default_rng(seed)
    clean = np.concatenate([loss_sc, loss_ft])
    noisy = clean * np.exp(s.noise * rng.standard_normal(clean.size)) if s.noise > 0 else clean
    regime = np.array(["scratch"] * loss_sc.size + ["finetune"] * loss_ft.size)
    return LossTable.from_columns(
        np.concatenate([ns.ravel(), nf.ravel()]), np.concatenate([ds.ravel(), dfs.ravel()]), regime, noisy
    )
