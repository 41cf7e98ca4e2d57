"""Fixtures for the measures suite. Sizes stay small: the whole folder must run in about a minute
on 2 cores. Data generators live in ``measures_testdata.py`` (this folder is put on ``sys.path``
because the project runs pytest with ``--import-mode=importlib``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
