"""Seeded standard-normal draws from a generator the caller passes in (never the global RNG)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch

from transferlab.errors import ConfigError

__all__ = ["RandomSource", "standard_normal"]

#: Where randomness comes from: a CPU ``torch.Generator`` or a ``numpy.random.Generator``.
RandomSource: TypeAlias = torch.Generator | np.random.Generator


def standard_normal(shape: Sequence[int], generator: RandomSource) -> torch.Tensor:
    """Draw i.i.d. N(0, 1) entries of the given ``shape`` as a float64 CPU tensor.

    Draws are always made in float64 (then cast by the caller), so a float32 and a float64 run
    of the same seed see the same data up to rounding.

    Raises:
        ConfigError: ``generator`` is neither a ``torch.Generator`` nor a ``numpy.random.Generator``.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.standard_normal(shape))
    raise ConfigError(
        f"generator must be a torch.Generator or numpy.random.Generator, got {type(generator).__name__}"
    )
