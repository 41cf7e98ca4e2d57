"""Linear teacher pairs and Gaussian regression data (Tahir, Ganguli & Rotskoff 2024, "Features are
fate", Sec. 3, Assumptions 3.1-3.2).

Model: inputs x ~ N(0, I_d), labels y = beta^T x + eps with eps ~ N(0, sigma^2). A source teacher
beta_s and a target teacher beta_t are unit vectors with overlap beta_s^T beta_t = cos(theta), built
by Gram--Schmidt as in the authors' code:

    beta_s = g / ||g||,   beta_perp = normalise(h - (h^T beta_s) beta_s),
    beta_t = cos(theta) beta_s + sin(theta) beta_perp,             g, h ~ N(0, I_d).

``theta`` is in radians (the authors' ``--theta`` is in units of pi/2). Batched data carry a leading
instances axis: X has shape (instances, n, d), y has shape (instances, n).
All randomness comes from the generator the caller passes (a ``torch.Generator`` or a
``numpy.random.Generator``); tensors are float64 and CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from transferlab._checks import check_int, check_real
from transferlab.errors import DataError
from transferlab.tasks._random import RandomSource, standard_normal

__all__ = ["TeacherPair", "teacher_pair", "linear_regression_data"]


@dataclass(frozen=True)
class TeacherPair:
    """Unit-norm source and target teachers at angle ``theta``.

    Attributes:
        beta_s: source teacher, shape (d,), ||beta_s|| = 1.
        beta_t: target teacher, shape (d,), ||beta_t|| = 1, beta_s^T beta_t = cos(theta).
        theta: the angle in radians.
    """

    beta_s: torch.Tensor
    beta_t: torch.Tensor
    theta: float


def teacher_pair(d: int, theta: float, generator: RandomSource) -> TeacherPair:
    """Draw a source/target teacher pair at angle ``theta`` (radians) in dimension ``d``.

    Consumes two standard-normal vectors of length d from ``generator`` (g, then h; see the module
    docstring for the construction).

    Raises:
        ConfigError: ``d < 2`` (no orthogonal direction exists) or ``theta`` is not finite.
    """
    d = check_int(d, "d", low=2)
    theta = check_real(theta, "theta")
    g = standard_normal((d,), generator)
    h = standard_normal((d,), generator)
    beta_s = g / torch.linalg.vector_norm(g)
    perp = h - (h @ beta_s) * beta_s
    perp = perp / torch.linalg.vector_norm(perp)
    beta_t = math.cos(theta) * beta_s + math.sin(theta) * perp
    return TeacherPair(beta_s=beta_s, beta_t=beta_t, theta=float(theta))


def linear_regression_data(
    beta: torch.Tensor,
    n: int,
    sigma: float,
    generator: RandomSource,
    instances: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``instances`` independent data sets of n samples from the teacher ``beta``.

    X_i ~ N(0, I_d) row-wise and y_i = X_i beta + sigma * eps_i with eps_i ~ N(0, I_n). The inputs
    of all instances are drawn first, then the noise.

    Args:
        beta: teacher, shape (d,).
        n: samples per instance (>= 1).
        sigma: label-noise standard deviation (>= 0).
        generator: the source of all randomness.
        instances: number of independent data sets (>= 1).

    Returns:
        X of shape (instances, n, d) and y of shape (instances, n), float64.

    Raises:
        DataError: ``beta`` is not a finite 1-D tensor.
        ConfigError: n, instances or sigma out of range.
    """
    if not isinstance(beta, torch.Tensor) or beta.ndim != 1 or not bool(torch.isfinite(beta).all()):
        raise DataError("beta must be a finite 1-D tensor of shape (d,)")
    n, instances = check_int(n, "n", low=1), check_int(instances, "instances", low=1)
    sigma = check_real(sigma, "sigma", low=0.0)
    d = beta.shape[0]
    X = standard_normal((instances, n, d), generator)
    noise = standard_normal((instances, n), generator)
    y = X @ beta.to(torch.float64) + sigma * noise
    return X, y
