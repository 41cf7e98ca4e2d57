"""Shared fixtures of the deep-linear simulation tests: seeded generators only, no global RNG."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    """Tests run single-threaded (other jobs share the 2 cores); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generator(seed: int) -> torch.Generator:
    """A fresh CPU torch generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)
