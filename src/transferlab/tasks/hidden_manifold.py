"""Correlated hidden-manifold tasks: a source and a target classification (or regression) task whose
relatedness is set by three knobs.

The hidden manifold model (Goldt, Mézard, Krzakala & Zdeborová 2020, "Modelling the influence of data
structure on learning in neural networks: the hidden manifold model", Phys. Rev. X 10, 041044). A task is
a feature matrix F of shape (D, N), a teacher theta of shape (D,) and an elementwise nonlinearity phi.
Each sample draws a latent vector c ~ N(0, I_D) on a D-dimensional manifold and embeds it in N dimensions:

    x = phi(F^T c / sqrt(D))            in R^N          (the input)
    h = theta^T c / sqrt(D)                               (the teacher field)
    y = 1[h + sigma * eps >= 0]  in {0, 1}   ("binary", int64, for cross-entropy)
    y = sign(h + sigma * eps)    in {-1, +1} ("signed", with sign(0) = +1)
    y = h + sigma * eps          in R        ("regression")                  eps ~ N(0, 1)

F and theta have i.i.d. N(0, 1) entries, so every preactivation (F^T c)_j / sqrt(D) is N(0, ||F_j||^2 / D)
with ||F_j||^2 / D -> 1, and h is N(0, ||theta||^2 / D). The labels depend on x only through the latent c.

Correlated pairs (Gerace, Saglietti, Sarao Mannelli, Saxe & Zdeborová 2022, "Probing transfer learning with
a model of synthetic correlated datasets", Mach. Learn.: Sci. Technol. 3, 015030; used for the defrosting
experiments of Gerace, Doimo, Sarao Mannelli, Saglietti & Laio 2023, "Optimal transfer protocol by
incremental layer defrosting"). The target task is the source task transformed by three operations, as in
Gerace et al. (2022): a perturbation of the features, a perturbation of the teacher, and the addition or
deletion of latent features. The *kinds* of transformation are the paper's; the formulas below (the
norm-preserving mixing, the exact orthogonalisation, which latent coordinates are dropped, the scalar q
and its mapping) are transferlab's reconstruction, not checked against the paper's text. With
D_t = D + delta_D latent dimensions for the target and D_sh = min(D, D_t) shared ones:

    latent coordinates  source uses c_1..c_D, target uses c_1..c_{D_t}: the first D_sh are shared;
                        delta_D < 0 deletes the source's last |delta_D| latent features,
                        delta_D > 0 adds delta_D new ones (fresh N(0, 1) rows of F_t and entries of theta_t).
    features            F_t[:, j] = rho_F F_s[:, j] + sqrt(1 - rho_F^2) G_j   on the shared rows, per column j,
    teacher             theta_t = rho_theta theta_s + sqrt(1 - rho_theta^2) g   on the shared entries,

where each G_j is a Gaussian draw made exactly orthogonal to the shared part of F_s[:, j] and rescaled to its
norm (Gram--Schmidt), and likewise g for theta_s. Hence, exactly (to rounding), on the shared block:

    ||F_t[:, j]|| = ||F_s[:, j]||,   cos(F_s[:, j], F_t[:, j]) = rho_F   for every input j,
    ||theta_t|| = ||theta_s||, cos(theta_s, theta_t) = rho_theta,

and, by rotation invariance, F_t and theta_t are themselves distributed exactly as a fresh draw of the
model (i.i.d. N(0, 1) entries): the knobs change how source and target are related, never the scale or the
marginal statistics of either task. With delta_D = 0 this makes ``pair.feature_overlap == rho_F`` and
``pair.teacher_overlap == rho_theta`` exactly, and every input x_j has the same marginal distribution in
both tasks. For the same latent c (delta_D = 0), P(y_s = y_t) = 1 - arccos(rho_theta) / pi.
The derivations and tests are summarised in ``docs/models/hidden_manifold.md``.

A single scalar correlation q in [0, 1] (:func:`correlated_pair`) maps to the knobs as
rho_F = rho_theta = q and delta_D = the nearest integer to (1 - q) * delta_D_max (ties away from zero;
delta_D_max = 0 by default, so q alone moves relatedness while the target's latent dimension, and so its
difficulty, stays fixed). q = 1 gives identical tasks; q = 0 gives a target whose feature columns and
teacher are orthogonal to the source's.

Randomness: every function takes the generator it draws from (a ``torch.Generator`` or a
``numpy.random.Generator``); draws are float64, and the parameters are float64 CPU tensors. The order of
the draws is documented per function; it does not depend on rho_F, rho_theta or the noise level, so one
seed gives the same source task, the same perturbation directions and the same latents across a sweep of
those knobs (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.tasks._random import RandomSource, standard_normal

__all__ = [
    "ACTIVATIONS",
    "LABEL_KINDS",
    "HiddenManifoldPair",
    "HiddenManifoldTask",
    "correlated_pair",
    "hidden_manifold_data",
    "hidden_manifold_pair",
    "hidden_manifold_task",
    "perturbed_task",
]

Activation = Literal["tanh", "sign", "relu", "erf"]
LabelKind = Literal["binary", "signed", "regression"]

#: The nonlinearities phi a task may use.
ACTIVATIONS: tuple[str, ...] = ("tanh", "sign", "relu", "erf")
#: The label conventions :func:`hidden_manifold_data` can return.
LABEL_KINDS: tuple[str, ...] = ("binary", "signed", "regression")

# E[tanh(s u)^2], u ~ N(0, 1), by the trapezoid rule on [-12, 12] with step 0.25 / max(1, s). The integrand
# is analytic in a strip of half-width pi / (2 s), so the error is about exp(-pi^2 / (s * step)) < 1e-15 at
# any s (checked against adaptive quadrature in the tests).
_QUADRATURE_HALF_WIDTH = 12.0
_QUADRATURE_STEP = 0.25


# --------------------------------------------------------------------------------------------------
# one task
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HiddenManifoldTask:
    """The generative parameters of one hidden-manifold task (Goldt et al. 2020).

    Attributes:
        features: F, shape (D, N): column j maps the latent c to input j, x_j = phi(F[:, j]^T c / sqrt(D)).
        teacher: theta, shape (D,): the labels depend on h = theta^T c / sqrt(D).
        activation: phi, one of :data:`ACTIVATIONS` (``"tanh"``, ``"sign"``, ``"relu"``, ``"erf"``).

    Raises:
        DataError: ``features`` is not a finite 2-D float tensor, or ``teacher`` is not a finite 1-D float
            tensor of length D.
        ConfigError: unknown ``activation``.
    """

    features: torch.Tensor
    teacher: torch.Tensor
    activation: str = "tanh"

    def __post_init__(self) -> None:
        F, theta = self.features, self.teacher
        if not isinstance(F, torch.Tensor) or F.ndim != 2 or not F.is_floating_point():
            raise DataError("features must be a 2-D float tensor of shape (D, N)")
        if not isinstance(theta, torch.Tensor) or theta.ndim != 1 or not theta.is_floating_point():
            raise DataError("teacher must be a 1-D float tensor of shape (D,)")
        if theta.shape[0] != F.shape[0] or F.shape[0] < 1 or F.shape[1] < 1:
            raise DataError(
                f"teacher has length {theta.shape[0]} but features have shape {tuple(F.shape)}; "
                "need (D,) and (D, N)"
            )
        if not (bool(torch.isfinite(F).all()) and bool(torch.isfinite(theta).all())):
            raise DataError("features and teacher must be finite")
        check_choice(self.activation, "activation", ACTIVATIONS)

    @property
    def latent_dim(self) -> int:
        """D, the dimension of the hidden manifold."""
        return int(self.features.shape[0])

    @property
    def input_dim(self) -> int:
        """N, the dimension of the inputs x."""
        return int(self.features.shape[1])

    def input_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean and variance of each input x_j over the latent c, given these parameters.

        With s_j^2 = ||F[:, j]||^2 / D the preactivation is z_j ~ N(0, s_j^2), and

            tanh:  E[x_j] = 0,                Var[x_j] = E[tanh(s_j u)^2], u ~ N(0, 1) (quadrature, error < 1e-12)
            sign:  E[x_j] = 0,                Var[x_j] = 1
            relu:  E[x_j] = s_j / sqrt(2 pi), Var[x_j] = s_j^2 (1/2 - 1/(2 pi))
            erf:   E[x_j] = 0,                Var[x_j] = (2/pi) arcsin(2 s_j^2 / (1 + 2 s_j^2)).

        Returns:
            mean and variance, each of shape (N,), float64.
        """
        F = self.features.to(torch.float64)
        s2 = (F * F).sum(dim=0) / self.latent_dim
        zeros = torch.zeros_like(s2)
        if self.activation == "sign":
            return zeros, torch.ones_like(s2)
        if self.activation == "relu":
            return torch.sqrt(s2 / (2 * math.pi)), s2 * (0.5 - 0.5 / math.pi)
        if self.activation == "erf":
            return zeros, (2 / math.pi) * torch.asin(2 * s2 / (1 + 2 * s2))
        s = torch.sqrt(s2)
        step = _QUADRATURE_STEP / max(1.0, float(s.max()))
        u = torch.arange(0.0, _QUADRATURE_HALF_WIDTH + step / 2, step, dtype=torch.float64)
        w = 2 * step * torch.exp(-u * u / 2) / math.sqrt(2 * math.pi)  # the integrand is even in u
        w[0] = step / math.sqrt(2 * math.pi)
        second = torch.tanh(s[:, None] * u) ** 2 @ w
        return zeros, second


def hidden_manifold_task(
    D: int, N: int, *, generator: RandomSource, activation: Activation = "tanh"
) -> HiddenManifoldTask:
    """Draw one hidden-manifold task: F (D, N) and theta (D,) with i.i.d. N(0, 1) entries.

    Draws, in order: F (D * N normals, row-major), then theta (D normals).

    Raises:
        ConfigError: D < 2, N < 1, unknown activation, or a bad generator.
    """
    D = check_int(D, "D", low=2)
    N = check_int(N, "N", low=1)
    check_choice(activation, "activation", ACTIVATIONS)
    F = standard_normal((D, N), generator)
    theta = standard_normal((D,), generator)
    return HiddenManifoldTask(features=F, teacher=theta, activation=activation)


def _norm_preserving_mix(a: torch.Tensor, b: torch.Tensor, rho: float) -> torch.Tensor:
    """rho * a + sqrt(1 - rho^2) * g column-wise, g = b made orthogonal to a and rescaled to ||a||.

    ``a`` and ``b`` have shape (D, M) (one mix per column, D >= 2). The result has the norm of ``a`` and
    cosine ``rho`` with it in every column, exactly up to rounding.
    """
    a_sq = (a * a).sum(dim=0)
    g = b - ((a * b).sum(dim=0) / a_sq) * a
    g = g * torch.sqrt(a_sq / (g * g).sum(dim=0))
    return rho * a + math.sqrt(max(0.0, 1.0 - rho * rho)) * g


def perturbed_task(
    source: HiddenManifoldTask,
    *,
    generator: RandomSource,
    rho_F: float = 1.0,
    rho_theta: float = 1.0,
    delta_D: int = 0,
) -> HiddenManifoldTask:
    """Derive a target task from ``source`` by the three norm-preserving knobs (see the module docstring).

    With D = source.latent_dim, D_t = D + delta_D and D_sh = min(D, D_t):

        F_t[:D_sh, j] = rho_F F_s[:D_sh, j] + sqrt(1 - rho_F^2) G_j,   G_j ⟂ F_s[:D_sh, j],  same norm
        theta_t[:D_sh] = rho_theta theta_s[:D_sh] + sqrt(1 - rho_theta^2) g,   g ⟂ theta_s[:D_sh], same norm
        F_t[D:, :], theta_t[D:]  fresh N(0, 1) draws (only when delta_D > 0).

    The target keeps the source's activation. Draws, in order: H (D * N normals; G is H[:D_sh]
    orthogonalised), h (D normals), then, if delta_D > 0, the new rows of F_t (delta_D * N normals) and the
    new entries of theta_t (delta_D normals). rho_F = rho_theta = 1 and delta_D = 0 return a task equal to
    the source (still consuming the draws).

    Args:
        source: the source task, F_s of shape (D, N), theta_s of shape (D,).
        generator: the source of all randomness.
        rho_F: per-column cosine between shared source and target features, in [-1, 1].
        rho_theta: cosine between shared source and target teachers, in [-1, 1] (-1 flips every label).
        delta_D: latent features added (> 0) or deleted (< 0); D + delta_D must be >= 2.

    Raises:
        ConfigError: a knob out of range or not a number, or a bad generator.
    """
    if not isinstance(source, HiddenManifoldTask):
        raise ConfigError(f"source must be a HiddenManifoldTask, got {type(source).__name__}")
    rho_F = check_real(rho_F, "rho_F", low=-1.0, high=1.0)
    rho_theta = check_real(rho_theta, "rho_theta", low=-1.0, high=1.0)
    D, N = source.latent_dim, source.input_dim
    D_t = D + check_int(delta_D, "delta_D", low=2 - D, note="the target needs >= 2 latent dimensions")
    D_sh = min(D, D_t)
    if D_sh < 2 and (rho_F != 1.0 or rho_theta != 1.0):  # only a user-built source with D = 1 gets here
        raise ConfigError("rho_F and rho_theta must be 1 when the tasks share fewer than 2 latent dimensions")
    F_s = source.features.to(torch.float64)
    theta_s = source.teacher.to(torch.float64)
    H = standard_normal((D, N), generator)
    h = standard_normal((D,), generator)
    # rho = 1 copies the source exactly (rather than 1 * a + 0 * g).
    F_sh = F_s[:D_sh].clone() if rho_F == 1.0 else _norm_preserving_mix(F_s[:D_sh], H[:D_sh], rho_F)
    theta_sh = theta_s[:D_sh, None].clone()
    if rho_theta != 1.0:
        theta_sh = _norm_preserving_mix(theta_sh, h[:D_sh, None], rho_theta)
    theta_sh = theta_sh[:, 0]
    if D_t > D:
        F_new = standard_normal((D_t - D, N), generator)
        theta_new = standard_normal((D_t - D,), generator)
        F_sh = torch.cat([F_sh, F_new], dim=0)
        theta_sh = torch.cat([theta_sh, theta_new])
    return HiddenManifoldTask(features=F_sh, teacher=theta_sh, activation=source.activation)


# --------------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------------


def _padded_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of vec(a) and vec(b) after zero-padding both to the larger first dimension."""
    k = min(a.shape[0], b.shape[0])
    a, b = a.to(torch.float64), b.to(torch.float64)
    dot = (a[:k] * b[:k]).sum()
    return float(dot / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)))


@dataclass(frozen=True)
class HiddenManifoldPair:
    """A source and a target hidden-manifold task and the knobs that relate them.

    Attributes:
        source: F_s (D, N), theta_s (D,).
        target: F_t (D_t, N), theta_t (D_t,), D_t = D + delta_D; it uses the latent coordinates c_1..c_{D_t},
            of which the first ``shared_latent_dim`` = min(D, D_t) are the source's.
        rho_F, rho_theta, delta_D: the knobs (see :func:`perturbed_task`).
        q: the scalar correlation it was built from (:func:`correlated_pair`), or None.
    """

    source: HiddenManifoldTask
    target: HiddenManifoldTask
    rho_F: float
    rho_theta: float
    delta_D: int
    q: float | None = None

    @property
    def shared_latent_dim(self) -> int:
        """D_sh = min(D, D_t), the latent coordinates both tasks use."""
        return min(self.source.latent_dim, self.target.latent_dim)

    @property
    def feature_overlap(self) -> float:
        """cos(vec F_s, vec F_t) with both zero-padded to the joint latent space of max(D, D_t) coordinates.

        Exactly (to rounding) it is rho_F ||F_s[:D_sh]||^2 / (||F_s|| ||F_t||) (Frobenius norms): rho_F when
        delta_D = 0, and close to rho_F * D_sh / sqrt(D * D_t) otherwise (relative fluctuations O(1/sqrt(D N))).
        """
        return _padded_cosine(self.source.features, self.target.features)

    @property
    def teacher_overlap(self) -> float:
        """cos(theta_s, theta_t) with both zero-padded to the joint latent space.

        Exactly rho_theta ||theta_s[:D_sh]||^2 / (||theta_s|| ||theta_t||): rho_theta when delta_D = 0, close to
        rho_theta * D_sh / sqrt(D * D_t) otherwise (relative fluctuations O(1/sqrt(D))).
        """
        return _padded_cosine(self.source.teacher, self.target.teacher)


def hidden_manifold_pair(
    D: int,
    N: int,
    *,
    generator: RandomSource,
    rho_F: float = 1.0,
    rho_theta: float = 1.0,
    delta_D: int = 0,
    activation: Activation = "tanh",
) -> HiddenManifoldPair:
    """Draw a source task of latent dimension D and input dimension N, and a target related to it by the knobs.

    The source is :func:`hidden_manifold_task` (D, N), the target :func:`perturbed_task` of it; the draws are
    theirs, in that order, so the source is the same for every value of the knobs.

    Raises:
        ConfigError: D < 2, N < 1, a knob out of range, unknown activation, or a bad generator.
    """
    source = hidden_manifold_task(D, N, generator=generator, activation=activation)
    target = perturbed_task(source, generator=generator, rho_F=rho_F, rho_theta=rho_theta, delta_D=delta_D)
    return HiddenManifoldPair(
        source=source, target=target, rho_F=float(rho_F), rho_theta=float(rho_theta), delta_D=int(delta_D)
    )


def correlated_pair(
    D: int,
    N: int,
    q: float,
    *,
    generator: RandomSource,
    delta_D_max: int = 0,
    activation: Activation = "tanh",
) -> HiddenManifoldPair:
    """A source/target pair whose relatedness is one scalar q in [0, 1] (transferlab's mapping).

        rho_F = rho_theta = q,     delta_D = round_half_away((1 - q) * delta_D_max).

    q = 1: identical tasks. q = 0: feature columns and teacher orthogonal to the source's (and
    delta_D_max latent features added, or |delta_D_max| deleted if negative). With the default
    delta_D_max = 0 the target's latent dimension stays D.

    Raises:
        ConfigError: q outside [0, 1], D < 2, N < 1, D + delta_D_max < 2, unknown activation, bad generator.
    """
    q = check_real(q, "q", low=0.0, high=1.0)
    scaled = (1.0 - q) * check_int(delta_D_max, "delta_D_max")
    delta_D = int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))
    pair = hidden_manifold_pair(
        D, N, generator=generator, rho_F=q, rho_theta=q, delta_D=delta_D, activation=activation
    )
    return HiddenManifoldPair(pair.source, pair.target, rho_F=q, rho_theta=q, delta_D=delta_D, q=q)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------

_PHI = {
    "tanh": torch.tanh,
    "sign": torch.sign,
    "relu": torch.relu,
    "erf": torch.special.erf,
}


def hidden_manifold_data(
    task: HiddenManifoldTask,
    n: int,
    generator: RandomSource,
    *,
    instances: int | None = None,
    labels: LabelKind = "binary",
    noise: float = 0.0,
    dtype: torch.dtype = torch.float32,
    return_latent: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Draw n samples (x, y) of a hidden-manifold task, optionally for ``instances`` independent data sets.

        c ~ N(0, I_D),  x = phi(F^T c / sqrt(D)),  h = theta^T c / sqrt(D),  eps ~ N(0, 1)
        "binary":     y = 1[h + noise * eps >= 0]   int64 in {0, 1}     P(y = 1) = 1/2 (theta != 0)
        "signed":     y = sign(h + noise * eps)     dtype in {-1, +1}   (sign(0) = +1)
        "regression": y = h + noise * eps           dtype               Var[y] = ||theta||^2 / D + noise^2

    The moments of x are :meth:`HiddenManifoldTask.input_moments`. Draws, in order: all latents c
    (instances * n * D normals), then all eps (instances * n normals, drawn even when noise = 0, so x and c
    do not depend on the noise level). ``instances=None`` returns exactly ``instances=1`` without its axis;
    a torch generator's draws depend on the requested shape, so instance 0 of ``instances=I`` differs from
    it. Computation is in float64, cast to ``dtype`` at the end, so a float32 and a float64 call with the
    same seed agree to float32 rounding.

    Args:
        task: the task; F of shape (D, N), theta of shape (D,).
        n: samples per data set (>= 1).
        generator: the source of all randomness.
        instances: None for one data set, or the size I (>= 1) of a leading instances axis.
        labels: one of :data:`LABEL_KINDS`.
        noise: sigma >= 0, the standard deviation of the noise added to the teacher field.
        dtype: torch.float32 or torch.float64, for x (and y unless ``labels="binary"``).
        return_latent: also return c.

    Returns:
        ``(x, y)`` or ``(x, y, c)``: x of shape (n, N), y of shape (n,), c of shape (n, D); with
        ``instances=I`` each has a leading axis of size I: (I, n, N), (I, n), (I, n, D).

    Raises:
        ConfigError: n, instances, labels, noise or dtype out of range, or a bad generator.
    """
    if not isinstance(task, HiddenManifoldTask):
        raise ConfigError(f"task must be a HiddenManifoldTask, got {type(task).__name__}")
    n = check_int(n, "n", low=1)
    I = 1 if instances is None else check_int(instances, "instances", low=1)
    check_choice(labels, "labels", LABEL_KINDS)
    noise = check_real(noise, "noise", low=0.0)
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    D = task.latent_dim
    c = standard_normal((I, n, D), generator)
    eps = standard_normal((I, n), generator)
    scale = 1.0 / math.sqrt(D)
    x = _PHI[task.activation]((c @ task.features.to(torch.float64)) * scale)
    field = (c @ task.teacher.to(torch.float64)) * scale + noise * eps
    if labels == "binary":
        y = (field >= 0).to(torch.int64)
    elif labels == "signed":
        y = torch.where(field >= 0, 1.0, -1.0).to(dtype)
    else:
        y = field.to(dtype)
    out = [x.to(dtype), y] + ([c.to(dtype)] if return_latent else [])
    if instances is None:
        out = [t[0] for t in out]
    return tuple(out)
