"""Shared fixtures of the deep-linear simulation tests: seeded generators only, no global RNG."""

from __future__ import annotations

import pytest
import torch

from transferlab.nets import DeepLinear
from transferlab.tasks import linear_regression_data, teacher_pair
from transferlab.train import LeastSquaresObjective

#: Width and instances of :func:`gd_problem`.
GD_D, GD_INSTANCES = 24, 6


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


def gd_problem(n: int | str, seed: int = 0) -> tuple[DeepLinear, LeastSquaresObjective]:
    """Six two-layer nets of width 24 with a shared init (scale 0.05) and their own objectives: n samples
    each (noise 0.3, teacher at angle 0.7), or ``"population"``: their own unit-norm population targets."""
    g = generator(seed)
    pair = teacher_pair(GD_D, 0.7, g)
    net = DeepLinear(GD_D, 2, GD_INSTANCES, init_scale=0.05, generator=g)
    if n == "population":
        targets = torch.randn(GD_INSTANCES, GD_D, generator=g, dtype=torch.float64)
        return net, LeastSquaresObjective.population(targets / targets.norm(dim=-1, keepdim=True))
    X, y = linear_regression_data(pair.beta_t, n, 0.3, g, GD_INSTANCES)
    return net, LeastSquaresObjective.empirical(X, y)
