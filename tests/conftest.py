"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os

import pytest

# Keep BLAS/OpenMP single-threaded in tests: the suite runs on 2 cores, often beside other jobs.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _matplotlib_agg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
