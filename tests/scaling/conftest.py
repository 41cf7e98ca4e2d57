"""Shared fixtures of the scaling tests: synthetic surfaces (module-cached; they take ~0.3 s each)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

from transferlab.scaling import (
    EffectiveDataTable,
    LossTable,
    SyntheticSurface,
    measure_effective_data,
    synthetic_losses,
)

TRUE_K, TRUE_ALPHA, TRUE_BETA = 1.9e4, 0.18, 0.38
TRUE_LOG10_K = float(np.log10(TRUE_K))


@functools.lru_cache(maxsize=None)
def surface_table(noise: float, seed: int) -> LossTable:
    return synthetic_losses(SyntheticSurface(noise=noise), seed=seed)


@functools.lru_cache(maxsize=None)
def surface_effective(noise: float, seed: int) -> EffectiveDataTable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # censoring warnings are tested on their own
        return measure_effective_data(surface_table(noise, seed))


@pytest.fixture(scope="session")
def clean_effective() -> EffectiveDataTable:
    return surface_effective(0.0, 0)
