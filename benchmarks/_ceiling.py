"""The machine's torch matmul ceiling, measured inside each benchmark run (shared by the torch benchmarks)."""

from __future__ import annotations

import math
import time

import torch


def matmul_ceiling(dtype: torch.dtype, size: int = 2000, repeats: int = 3) -> float:
    """Best GFLOP/s of a (size x size) @ (size x size) torch matmul (2 size^3 FLOPs), after one warm-up."""
    a = torch.randn(size, size, dtype=dtype, generator=torch.Generator().manual_seed(0))
    a @ a
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
