"""``fate_relu``: the nonlinear (ReLU) section of "Features are fate" (paper 1, Sec. 4, Fig. 3, App. E).

Set-up (Tahir, Ganguli & Rotskoff 2024, Sec. 4; docs/models/fate_relu.md). Inputs ``x ~ N(0, I_d)``. The
target teacher ``f_t(x) = sum_{i <= m*} a_i relu(w_i . x)`` has ``m*`` unit-norm neurons in random
directions and output weights ``a_i = 1/m*`` (or ``+-1/m*``); the source teacher ``f_s`` is the target
teacher with a fraction ``mu`` of its neurons removed (:func:`transferlab.theory.relu.relu_teacher_pair`).
The student is a two-layer ReLU network in the mean-field scaling::

    f(x) = (1/m) sum_{i <= m} c_i relu(w_i . x),      W: (m, d),  c: (m,)

Protocols of one cell (``protocol``):

- ``"transfer"``: pretrain the student on the *population* loss of the source teacher,
  ``L(c, W) = E_x[(f(x) - f_s(x))^2] = a^T G(W) a - 2 a^T K(W, W_s) b + b^T G(W_s) b`` with ``a = c/m``
  and ``b`` the source output weights, in closed form through the arc-cosine kernel (:func:`relu_pair_kernel`:
  exact, no sampling noise); then *linear transfer*: keep ``W`` and refit the readout on ``n`` target
  samples by kernel ridge regression in the pretrained features, ``K = Phi Phi^T / m`` (``Phi_{mu i} =
  relu(w_i . x_mu)``, shape ``(n, m)``), ``c = Phi^T (K + n ridge I)^{-1} y`` (the minimiser of
  ``(1/n) ||Phi c / m - y||^2 + ridge ||c||^2 / m``).
- ``"scratch"``: train the same student from the same initialisation on the ``n`` target samples
  (empirical squared loss, full batch).

Optimiser (ours; the paper's optimiser, learning rate and step count were not recovered): full-batch
gradient descent with step ``lr * m`` on both layers (``scratch_lr * m`` from scratch: the empirical loss
on a few samples is stiffer than the population loss, and ``lr = 2`` diverges there at small ``n``).
Each parameter's gradient is ``O(1/m)`` in the mean-field scaling, so the step ``lr * m`` makes the
dynamics the ``m``-independent discretised mean-field gradient flow. The initialisation is small,
``w_i ~ N(0, init_scale^2 I_d / d)`` and ``c_i ~ N(0, init_scale^2)`` (rich regime: the neurons that grow are the ones that align with the
teacher; the rest stay at the small initial scale and hardly enter the kernel). A run stops at the first
step where its relative loss (population loss / ``||f_s||^2`` in pretraining, training loss / mean ``y^2``
from scratch) is at most the tolerance (``pretrain_tol``, ``scratch_tol``); ``converged`` records
whether that happened within the step budget. Instances are trained one after the other, each its own
run, so an instance's result does not depend on the others. Plain GD, no momentum and no Adam: at
``d = 100, mu = 0.1`` heavy-ball momentum reaches small losses sooner but on a solution whose kernel misses
the source teacher's, and Adam grows every neuron (docs/models/fate_relu.md, "The full specification"); the
small-step gradient flow from the small initialisation is what makes the kernel the source teacher's. The
pretraining loss and gradient are computed in closed form in one pass (:func:`population_error_grad`);
``dtype = "float32"`` trains in single precision (the full specification: 2.4 times faster than float64
at ``m = 1000``, the loss exact to about ``1e-7 ||f_s||^2``), while the stopping loss, the readout solve
and all errors are float64.

Errors are population errors in closed form: ``||f - f_t||^2 = E_x[(f(x) - f_t(x))^2]`` of two ReLU
networks is a quadratic form in the arc-cosine kernel (no test set; label noise ``sigma`` of the target
samples would add ``sigma^2`` to a test error on noisy labels and is not included).

Randomness. Instance ``i`` of a replicate has its own teacher pair, student initialisation, target
samples (per ``n``) and probe inputs, each from a generator seeded by (spec seed, replicate, the fields
that define it, i) -- never by ``mu`` or the protocol: every ``mu`` shares instance ``i``'s target
teacher with nested sources (a larger ``mu`` removes a superset of neurons), and the transfer and
scratch runs of a (replicate, instance, n) see the same target samples (paired comparisons).

Rows. ``transfer``: ``risk_transfer`` (mean over converged instances) and ``risk_transfer_instances``,
``floor_instances`` (``||P_perp f_t||^2``, :func:`transferlab.theory.relu.out_of_rkhs_norm2`),
``target_norm2_instances``, ``pretrain_loss_instances`` (relative), ``steps_pretrain_instances``,
``kernel_cka_instances`` (linear CKA, i.e. centred alignment of the Gram matrices, of the pretrained
student's features and the source teacher's features on ``probe_size`` fresh inputs),
``kernel_cka_init_instances`` (the same for the student at initialisation) and
``kernel_cka_target_instances`` (the target teacher's features against the source's), ``gram_student``
and ``gram_source`` (instance 0's Gram matrices on the first :data:`GRAM_FIGURE_POINTS` probe inputs,
for the figure), ``converged`` (one flag per instance: pretraining met its tolerance).
``scratch``: ``risk_scratch``, ``risk_scratch_instances``, ``train_loss_instances`` (relative),
``steps_scratch_instances``, ``converged``.

:meth:`FateReluExperiment.analyze` drops unconverged instances (and counts them), fits the scratch power
law ``R_sc ~ A n^(-b)`` (least squares in log-log on the per-``n`` means, 95% percentile bootstrap
interval over instances), computes the phase boundary ``A n^(-b) = ||P_perp f_t||^2``, i.e.
``n*(mu) = (A / floor(mu))^(1/b)``, the paired transferability ``T = R_sc - R_transfer`` on the (mu, n)
grid and the kernel agreement per ``mu`` (pass: mean CKA >= :data:`KERNEL_AGREEMENT_THRESHOLD`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from transferlab.experiments._source_cache import digest
from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

__all__ = [
    "GRAM_FIGURE_POINTS",
    "KERNEL_AGREEMENT_THRESHOLD",
    "FateReluConfig",
    "FateReluExperiment",
    "fit_power_law",
    "linear_transfer",
    "population_error",
    "population_error_grad",
    "pretrain",
    "relu_pair_kernel",
]

#: The pretrained student's kernel "agrees" with the source teacher's when the mean linear CKA of their
#: features on fresh Gaussian probe inputs is at least this. Our choice: a random (initial) student scores
#: about 0.4 at d = m* = 20 and the *target* teacher about 0.8 at mu = 0.5 (docs/models/fate_relu.md), so
#: 0.95 is met only by a kernel that is closer to the source's than the target teacher's own kernel is.
KERNEL_AGREEMENT_THRESHOLD = 0.95
#: Probe inputs whose Gram matrices are stored (instance 0) and drawn in the Gram-matrix figure.
GRAM_FIGURE_POINTS = 30
#: A floor ``||P_perp f_t||^2`` below this times ``||f_t||^2`` is rounding of an exact zero (mu = 0): no boundary.
FLOOR_ROUNDING = 1e-12
#: Bootstrap resamples of the scratch power-law fit.
BOOTSTRAP_RESAMPLES = 2000


class FateReluConfig(ExperimentConfig):
    """One cell of the ``fate_relu`` experiment (see the module docstring)."""

    protocol: Literal["transfer", "scratch"] = Field("transfer", description="linear transfer or scratch training")
    mu: float | None = Field(None, ge=0.0, lt=1.0, description="fraction of target neurons removed (transfer only)")
    n: int = Field(ge=1, description="target training samples per instance")
    d: int = Field(100, ge=2, description="input dimension")
    m_star: int = Field(100, ge=1, description="target teacher neurons")
    m: int = Field(1000, ge=1, description="student neurons")
    teacher_weights: Literal["uniform", "sign"] = Field("uniform", description="teacher output weights 1/m* or +-1/m*")
    instances: int = Field(4, ge=1, description="independent teachers, initialisations and target samples")
    sigma: float = Field(0.0, ge=0.0, description="label-noise std of the target samples")
    init_scale: float = Field(0.01, gt=0.0, description="student initialisation scale alpha")
    lr: float = Field(2.0, gt=0.0, description="mean-field learning rate eta: the GD step is eta * m")
    pretrain_steps: int = Field(2000, ge=1, description="most GD steps of source pretraining")
    pretrain_tol: float = Field(3e-4, gt=0.0, description="stop when population loss / ||f_s||^2 <= this")
    scratch_lr: float = Field(0.5, gt=0.0, description="mean-field learning rate of scratch training (step eta * m)")
    scratch_steps: int = Field(5000, ge=1, description="most GD steps of scratch training")
    scratch_tol: float = Field(1e-4, gt=0.0, description="stop when training loss / mean(y^2) <= this")
    ridge: float = Field(1e-3, gt=0.0, description="ridge of the linear-transfer readout (kernel ridge lambda)")
    probe_size: int = Field(500, ge=GRAM_FIGURE_POINTS, description="probe inputs of the kernel comparison")
    dtype: Literal["float64", "float32"] = Field("float64", description="training precision")

    @model_validator(mode="after")
    def _consistent(self) -> FateReluConfig:
        if self.protocol == "transfer" and self.mu is None:
            raise ValueError("protocol 'transfer' needs mu (the fraction of teacher neurons removed from the source)")
        if self.protocol == "scratch" and self.mu is not None:
            raise ValueError("protocol 'scratch' never sees the source: drop mu")
        if self.mu is not None and math.floor(self.mu * self.m_star + 0.5) >= self.m_star:
            raise ValueError(f"mu = {self.mu} removes all m_star = {self.m_star} teacher neurons: the source is empty")
        return self


class FateReluExperiment(Experiment):
    name = "fate_relu"
    version = "1"
    Config = FateReluConfig
    description = "Features are fate, ReLU section: mean-field student, linear transfer vs scratch over (mu, n)."

    def batch_key(self, config: FateReluConfig) -> Hashable:  # type: ignore[override]
        """Transfer cells that differ only in ``n`` share one pretraining: one batch (pretrained once, in
        memory); scratch cells share nothing and run as separate tasks."""
        return config.model_dump_json(exclude={"n"} if config.protocol == "transfer" else None)

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        return [_run_cell(cell) for cell in cells]

    def analyze(self, table: ResultTable) -> Results:
        """Per setting (every field but protocol, mu, n): scratch fit, floors, boundary, T map, kernel agreement."""
        settings = [_analyze_setting(rows) for rows in table.group_by(*_SETTING_FIELDS).values()]
        for i, s in enumerate(settings):
            s["slug"] = f"_{i}" if len(settings) > 1 else ""
        summary: dict[str, Any] = {"settings": len(settings)}
        tables: dict[str, list[dict[str, Any]]] = {}
        for s in settings:
            p = f"{s['label']}: " if len(settings) > 1 else ""
            summary[f"{p}instances dropped (training did not converge)"] = (
                f"pretraining {s['dropped']['transfer']} of {s['total']['transfer']}, "
                f"scratch {s['dropped']['scratch']} of {s['total']['scratch']}")
            fit = s["fit"]
            if fit is not None:
                summary[f"{p}scratch power law R_sc = A n^-b"] = (
                    f"b = {fit['b']:.3f} (95% CI {fit['b_low']:.3f} .. {fit['b_high']:.3f}), A = {fit['A']:.4g}, "
                    f"over n = {min(fit['n'])}..{max(fit['n'])} (the paper: b ~ 1.18)")
            for row in s["kernel"]:
                agreement = ("CKA(pretrained student, source): n/a (no pretraining converged)" if row["cka"] is None
                             else f"CKA(pretrained student, source) = {row['cka']:.3f} ± {row['cka_se'] or 0:.3f} "
                                  f"({'meets' if row['agrees'] else 'misses'} {KERNEL_AGREEMENT_THRESHOLD})")
                summary[f"{p}kernel agreement at mu = {row['mu']:g}"] = (
                    f"{agreement}; initial student {row['cka_init']:.3f}; target teacher {row['cka_target']:.3f}")
            tables[f"{p}scratch"] = s["scratch_table"]
            tables[f"{p}transfer"] = s["transfer_table"]
            tables[f"{p}floor, boundary and kernel agreement by mu"] = s["kernel"]
        return Results(tables=tables, summary=summary, data={"settings": settings})

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


# --------------------------------------------------------------------------------------------------
# the arc-cosine kernel in torch, with its gradient
# --------------------------------------------------------------------------------------------------


def _pair_kernel_function() -> type:
    import torch

    class _PairKernel(torch.autograd.Function):
        """``K_ij = E[relu(w_i.x) relu(v_j.x)] = (|w_i| |v_j| sin t_ij + (pi - t_ij) w_i.v_j) / (2 pi)``.

        ``t_ij = arccos(u_ij)``. The gradient is the closed form
        ``dK_ij/dw_i = ((pi - t_ij) v_j + |v_j| sin t_ij w_i / |w_i|) / (2 pi)``, finite at ``u = +-1``
        where autograd through ``arccos`` and ``sqrt(1 - u^2)`` would give infinities.
        """

        @staticmethod
        def forward(ctx: Any, W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
            tiny = torch.finfo(W.dtype).tiny
            nw, nv = W.norm(dim=-1).clamp_min(tiny), V.norm(dim=-1).clamp_min(tiny)
            dots = W @ V.transpose(-1, -2)
            scale = nw[..., :, None] * nv[..., None, :]
            theta = torch.arccos((dots / scale).clamp(-1.0, 1.0))
            sin = torch.sin(theta)
            ctx.save_for_backward(W, V, nw, nv, theta, sin)
            return (scale * sin + (math.pi - theta) * dots) / (2.0 * math.pi)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            W, V, nw, nv, theta, sin = ctx.saved_tensors
            angular = (math.pi - theta) * grad
            radial = grad * sin
            gW = angular @ V + (radial @ nv[..., :, None]) * W / nw[..., :, None]
            gV = angular.transpose(-1, -2) @ W + (radial.transpose(-1, -2) @ nw[..., :, None]) * V / nv[..., :, None]
            return gW / (2.0 * math.pi), gV / (2.0 * math.pi)

    return _PairKernel


@functools.cache
def _kernel_op() -> Any:
    return _pair_kernel_function().apply


def relu_pair_kernel(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Differentiable cross-kernel ``K_ij = E_x[relu(w_i . x) relu(v_j . x)]``, ``x ~ N(0, I_d)``.

    The torch twin of :func:`transferlab.theory.relu.relu_kernel` (same formula, any norms) with a
    closed-form backward (finite where two neurons are parallel).

    Args:
        W: ``(..., m, d)``; V: ``(..., k, d)``, leading axes equal.

    Returns:
        ``(..., m, k)`` tensor.
    """
    return _kernel_op()(W, V)


def _quad(a: torch.Tensor, K: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[..., :, None] * K * b[..., None, :]).sum(dim=(-1, -2))


def population_error(a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``E_x[(f(x) - g(x))^2]`` for ``f = sum_i a_i relu(w_i . x)``, ``g = sum_j b_j relu(v_j . x)``.

    ``= a^T G(W) a - 2 a^T K(W, V) b + b^T G(V) b`` (arc-cosine kernel; exact).

    Args:
        a: ``(I, m)``; W: ``(I, m, d)``; b: ``(I, k)``; V: ``(I, k, d)``.

    Returns:
        ``(I,)`` tensor (clamped at 0 against rounding).
    """
    k = relu_pair_kernel
    value = _quad(a, k(W, W), a) - 2.0 * _quad(a, k(W, V), b) + _quad(b, k(V, V), b)
    return value.clamp_min(0.0)


def population_error_grad(a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, V: torch.Tensor,
                          norm2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The population error of :func:`population_error` and its gradient in ``(a, W)``, in one pass.

    With ``z = (a_i |w_i|; -b_j |v_j|)`` and the unit neurons ``Z = (w_i/|w_i|; v_j/|v_j|)`` of the
    student and the source teacher stacked (``m + k`` rows), the cosines ``U = What Z^T`` (``(m, m+k)``),
    ``M = pi - arccos U`` and ``S = sqrt(1 - U^2)``, the closed form of the kernel gives::

        R = M (z * Z)   (m, d),      s = S z   (m,)
        h_i = |w_i| (s_i + what_i . R_i) / (2 pi)          = (G(W) a - K(W, V) b)_i
        L   = a . h - a^T K(W, V) b + ||g||^2
        dL/da_i = 2 h_i,      dL/dw_i = (a_i / pi) (R_i + s_i what_i)

    (``dK(w, v)/dw = ((pi - t) v + |v| sin t w/|w|) / (2 pi)``, the backward of :func:`relu_pair_kernel`,
    summed over both slots of ``G``). Two ``(m, m+k, d)`` matrix products and one ``arccos`` of the
    ``(m, m+k)`` cosines per step: about a third of the time of autograd through :func:`population_error`,
    which builds and differentiates ``G(W)`` and ``K(W, V)`` separately with more ``(m, m)`` temporaries.

    Args:
        a: ``(I, m)``; W: ``(I, m, d)``; b: ``(I, k)``; V: ``(I, k, d)``; norm2: ``(I,)``, the constant
            ``||g||^2 = b^T G(V) b``.

    Returns:
        ``(L (I,), dL/da (I, m), dL/dW (I, m, d))``, in the dtype of the inputs (``L`` not clamped: a
        difference of ``O(||g||^2)`` terms, exact up to rounding).
    """
    import torch

    m = W.shape[-2]
    tiny = torch.finfo(W.dtype).tiny
    nw, nv = W.norm(dim=-1).clamp_min(tiny), V.norm(dim=-1).clamp_min(tiny)
    What = W / nw[..., None]
    Z = torch.cat([What, V / nv[..., None]], dim=-2)
    z = torch.cat([a * nw, -b * nv], dim=-1)
    U = (What @ Z.transpose(-1, -2)).clamp_(-1.0, 1.0)
    # in-place chains: torch's scalar-minus-tensor allocates and is several times slower here
    S = torch.mul(U, U).neg_().add_(1.0).clamp_min_(0.0).sqrt_()
    M = torch.arccos(U).neg_().add_(math.pi)
    R = M @ (z[..., None] * Z)
    s = (S @ z[..., None])[..., 0]
    h = nw * (s + (What * R).sum(dim=-1)) / (2.0 * math.pi)
    cross = (z[..., :m, None] * (S[..., m:] + M[..., m:] * U[..., m:]) * z[..., None, m:]).sum(dim=(-1, -2))
    loss = (a * h).sum(dim=-1) + cross / (2.0 * math.pi) + norm2
    return loss, 2.0 * h, (a / math.pi)[..., None] * (R + s[..., None] * What)


# --------------------------------------------------------------------------------------------------
# seeding, teachers, data
# --------------------------------------------------------------------------------------------------

_TEACHER_FIELDS = ("d", "m_star", "teacher_weights")


def _seq(cell: Cell, role: str, **fields: Any) -> np.random.SeedSequence:
    """A seed sequence from (spec seed, replicate, role, fields) only: never mu or the protocol."""
    words = (int(c, 16) for c in digest({"role": role, **fields})[:32])
    return np.random.SeedSequence([cell.seed, cell.replicate, *words])


def _teachers(cell: Cell, cfg: FateReluConfig) -> list[Any]:
    """One :class:`~transferlab.theory.relu.ReluTeacherPair` per instance (nested sources across mu)."""
    from transferlab.theory.relu import relu_teacher_pair

    fields = {f: getattr(cfg, f) for f in _TEACHER_FIELDS}
    return [relu_teacher_pair(cfg.d, cfg.m_star, cfg.mu or 0.0,
                              np.random.default_rng(_seq(cell, "teacher", instance=i, **fields)), cfg.teacher_weights)
            for i in range(cfg.instances)]


def _stack(arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.stack(arrays), dtype=dtype)


def _student_init(cell: Cell, cfg: FateReluConfig, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``W (I, m, d)`` and ``c (I, m)``: ``w_i ~ N(0, alpha^2 I / d)``, ``c_i ~ N(0, alpha^2)``, per instance."""
    W, c = [], []
    for i in range(cfg.instances):
        rng = np.random.default_rng(_seq(cell, "student", instance=i, d=cfg.d, m=cfg.m))
        W.append(rng.standard_normal((cfg.m, cfg.d)) * cfg.init_scale / math.sqrt(cfg.d))
        c.append(rng.standard_normal(cfg.m) * cfg.init_scale)
    return _stack(W, dtype), _stack(c, dtype)


def _target_data(cell: Cell, cfg: FateReluConfig, teachers: list[Any], dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``X (I, n, d)`` standard normal and ``y = f_t(X) + sigma * noise`` ``(I, n)``, per instance."""
    X, y = [], []
    for i, t in enumerate(teachers):
        teacher = {f: getattr(cfg, f) for f in _TEACHER_FIELDS}
        rng = np.random.default_rng(_seq(cell, "data", instance=i, n=cfg.n, **teacher))
        x = rng.standard_normal((cfg.n, cfg.d))
        X.append(x)
        y.append(np.maximum(x @ t.target_neurons.T, 0.0) @ t.target_weights + cfg.sigma * rng.standard_normal(cfg.n))
    return _stack(X, dtype), _stack(y, dtype)


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------


def pretrain(c0: torch.Tensor, W0: torch.Tensor, b: torch.Tensor, V: torch.Tensor, *, lr: float, max_steps: int,
             tol: float) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Mean-field GD on the population loss of the source teacher ``f_s = sum_j b_j relu(v_j . x)``.

    Loss ``E_x[(f(x) - f_s(x))^2]`` with ``f = (1/m) sum_i c_i relu(w_i . x)``, value and gradient in
    closed form (:func:`population_error_grad`), step ``lr * m`` on ``c`` and ``W``, stop at the first
    step where ``loss / ||f_s||^2 <= tol``. Instances are trained one after the other (independent runs;
    at ``m = 1000`` one instance's ``(m, m)`` temporaries fit in cache and a batch of four does not, so the
    loop is faster than a batched step). In float32 a loss at or below the tolerance is confirmed by the
    float64 closed form (:func:`population_error`) before the run stops, and the relative loss returned
    is always that float64 value.

    Args:
        c0: ``(I, m)``; W0: ``(I, m, d)``, the training dtype; b: ``(I, m_s)``; V: ``(I, m_s, d)`` (best
            float64: the steps use them in the training dtype, the stopping loss in float64).

    Returns:
        ``(c, W, relative_loss (I,), steps (I,), converged (I,))``: the parameters after ``steps`` updates.

    Raises:
        TrainingDiverged: a non-finite loss (the message says to lower ``lr``).
    """
    import torch

    runs = [_pretrain_one(c0[i:i + 1], W0[i:i + 1], b[i:i + 1], V[i:i + 1], lr * c0.shape[-1], max_steps, tol)
            for i in range(c0.shape[0])]
    c, W, rel, steps = zip(*runs, strict=True)
    rel_arr = np.array(rel)
    return torch.cat(c), torch.cat(W), rel_arr, np.array(steps), rel_arr <= tol


def _pretrain_one(c: torch.Tensor, W: torch.Tensor, b: torch.Tensor, V: torch.Tensor, step: float, max_steps: int,
                  tol: float) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """One instance of :func:`pretrain` (leading axis 1): ``(c, W, relative loss (float64), steps)``."""
    import torch

    from transferlab.errors import TrainingDiverged

    m = c.shape[-1]
    b64, V64 = b.double(), V.double()
    norm2_64 = _quad(b64, relu_pair_kernel(V64, V64), b64)
    b, V, norm2 = b.to(c.dtype), V.to(c.dtype), norm2_64.to(c.dtype)
    c, W = c.clone(), W.clone()
    s = 0
    with torch.no_grad():
        while True:
            loss, g_a, g_W = population_error_grad(c / m, W, b, V, norm2)
            rel = float(loss[0] / norm2[0])
            if not math.isfinite(rel):
                raise TrainingDiverged(f"gradient descent diverged at step {s} (step size {step:g}); lower lr")
            if rel <= tol or s == max_steps:
                exact = float(population_error(c.double() / m, W.double(), b64, V64)[0] / norm2_64[0])
                if exact <= tol or s == max_steps:
                    return c, W, exact, s
            c -= (step / m) * g_a  # dL/dc = (dL/da) / m
            W -= step * g_W
            s += 1


def _scratch(c0: torch.Tensor, W0: torch.Tensor, X: torch.Tensor, y: torch.Tensor, cfg: FateReluConfig
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Mean-field GD on the empirical loss ``mean_mu (f(x_mu) - y_mu)^2``, step ``scratch_lr * m``.

    Each instance is its own run (as in :func:`pretrain`), stopped at the first step where its training loss
    / ``mean(y^2)`` is at most ``scratch_tol``.

    Returns:
        ``(c, W, relative_loss (I,), steps (I,), converged (I,))``.

    Raises:
        TrainingDiverged: a non-finite loss (the message says to lower ``scratch_lr``).
    """
    import torch

    runs = [_scratch_one(c0[i:i + 1], W0[i:i + 1], X[i:i + 1], y[i:i + 1], cfg) for i in range(c0.shape[0])]
    c, W, rel, steps = zip(*runs, strict=True)
    rel_arr = np.array(rel)
    return torch.cat(c), torch.cat(W), rel_arr, np.array(steps), rel_arr <= cfg.scratch_tol


def _scratch_one(c: torch.Tensor, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, cfg: FateReluConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """One instance of :func:`_scratch` (leading axis 1): ``(c, W, relative training loss, steps)``."""
    import torch

    from transferlab.errors import TrainingDiverged

    m, step = cfg.m, cfg.scratch_lr * cfg.m
    scale = float((y * y).mean())
    c, W = c.clone().requires_grad_(True), W.clone().requires_grad_(True)
    s = 0
    while True:
        f = torch.relu(X @ W.transpose(-1, -2)) @ c[..., None] / m
        loss = ((f[..., 0] - y) ** 2).mean()
        rel = float(loss.detach()) / scale
        if not math.isfinite(rel):
            raise TrainingDiverged(f"gradient descent diverged at step {s} (step size {step:g}); lower scratch_lr")
        if rel <= cfg.scratch_tol or s == cfg.scratch_steps:
            return c.detach(), W.detach(), rel, s
        g_c, g_W = torch.autograd.grad(loss, (c, W))
        with torch.no_grad():
            c -= step * g_c
            W -= step * g_W
        s += 1


def linear_transfer(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Readout ``c (I, m)`` refit by kernel ridge regression in the features ``relu(X W^T)``.

    ``c = Phi^T (Phi Phi^T / m + n ridge I)^{-1} y`` with ``Phi = relu(X W^T)`` of shape ``(I, n, m)``: the
    minimiser of ``(1/n) ||Phi c / m - y||^2 + ridge ||c||^2 / m``.
    """
    import torch

    n, m = X.shape[-2], W.shape[-2]
    phi = torch.relu(X @ W.transpose(-1, -2))
    K = phi @ phi.transpose(-1, -2) / m + n * ridge * torch.eye(n, dtype=X.dtype)
    return (phi.transpose(-1, -2) @ torch.linalg.solve(K, y[..., None]))[..., 0]


# --------------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------------

#: The last pretraining of this process, by the digest of what determines it (cells differing in n share it).
_PRETRAINED: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]] = {}


def _pretrained(cell: Cell, cfg: FateReluConfig, teachers: list[Any], dtype: torch.dtype) -> tuple[Any, ...]:
    import torch

    key = digest({"seed": cell.seed, "replicate": cell.replicate,
                  **cfg.model_dump(exclude={"n", "protocol", "sigma", "ridge", "scratch_lr", "scratch_steps",
                                            "scratch_tol", "probe_size"})})
    if key not in _PRETRAINED:
        W0, c0 = _student_init(cell, cfg, dtype)
        b = _stack([t.source_weights for t in teachers], torch.float64)
        V = _stack([t.source_neurons for t in teachers], torch.float64)
        _PRETRAINED.clear()
        _PRETRAINED[key] = pretrain(c0, W0, b, V, lr=cfg.lr, max_steps=cfg.pretrain_steps, tol=cfg.pretrain_tol)
    return _PRETRAINED[key]


def _kernel_agreement(cell: Cell, cfg: FateReluConfig, teachers: list[Any], W: torch.Tensor, W0: torch.Tensor
                      ) -> dict[str, Any]:
    """Linear CKA of the student's and the source teacher's features on fresh probe inputs, per instance."""
    from transferlab.measures import cka_similarity

    relu = lambda x, w: np.maximum(x @ w.T, 0.0)  # noqa: E731  (probe, neurons)
    out: dict[str, list[float]] = {"kernel_cka_instances": [], "kernel_cka_init_instances": [],
                                   "kernel_cka_target_instances": []}
    grams: dict[str, Any] = {}
    for i, t in enumerate(teachers):
        rng = np.random.default_rng(_seq(cell, "probe", instance=i, d=cfg.d, size=cfg.probe_size))
        x = rng.standard_normal((cfg.probe_size, cfg.d))
        student, source = relu(x, W[i].double().numpy()), relu(x, t.source_neurons)
        out["kernel_cka_instances"].append(cka_similarity(student, source))
        out["kernel_cka_init_instances"].append(cka_similarity(relu(x, W0[i].double().numpy()), source))
        out["kernel_cka_target_instances"].append(cka_similarity(relu(x, t.target_neurons), source))
        if i == 0:
            k = GRAM_FIGURE_POINTS
            grams["gram_student"] = (student[:k] @ student[:k].T / cfg.m).tolist()
            grams["gram_source"] = (source[:k] @ source[:k].T / t.source_neurons.shape[0]).tolist()
    return {**out, **grams}


def _run_cell(cell: Cell) -> dict[str, Any]:
    import torch

    from transferlab.theory.relu import function_norm2, out_of_rkhs_norm2

    cfg: FateReluConfig = cell.config  # type: ignore[assignment]
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    teachers = _teachers(cell, cfg)
    X, y = _target_data(cell, cfg, teachers, torch.float64)
    a_t = _stack([t.target_weights for t in teachers], torch.float64)
    W_t = _stack([t.target_neurons for t in teachers], torch.float64)
    if cfg.protocol == "scratch":
        W0, c0 = _student_init(cell, cfg, dtype)
        c, W, rel, steps, conv = _scratch(c0, W0, X.to(dtype), y.to(dtype), cfg)
        with torch.no_grad():
            risk = population_error(c.double() / cfg.m, W.double(), a_t, W_t).numpy()
        return {"risk_scratch": float(np.mean(risk[conv])) if conv.any() else None,
                "risk_scratch_instances": risk.tolist(), "train_loss_instances": rel.tolist(),
                "steps_scratch_instances": steps.tolist(), "converged": conv.tolist()}
    _, W, rel, steps, conv = _pretrained(cell, cfg, teachers, dtype)
    with torch.no_grad():
        c = linear_transfer(W.double(), X, y, cfg.ridge)  # float64 solve whatever the training precision
        risk = population_error(c.double() / cfg.m, W.double(), a_t, W_t).numpy()
    W0, _ = _student_init(cell, cfg, dtype)
    return {"risk_transfer": float(np.mean(risk[conv])) if conv.any() else None,
            "risk_transfer_instances": risk.tolist(),
            "floor_instances": [float(out_of_rkhs_norm2(t.target_weights, t.target_neurons, t.source_neurons))
                                for t in teachers],
            "target_norm2_instances": [float(function_norm2(t.target_weights, t.target_neurons)) for t in teachers],
            "pretrain_loss_instances": rel.tolist(), "steps_pretrain_instances": steps.tolist(),
            **_kernel_agreement(cell, cfg, teachers, W, W0), "converged": conv.tolist()}


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------

#: The axes of one analysis; every other config field defines the setting.
_AXES = ("protocol", "mu", "n")
_SETTING_FIELDS = tuple(f for f in FateReluConfig.model_fields if f not in _AXES)


def fit_power_law(n: Sequence[int], samples: Sequence[Sequence[float]], *, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = 0) -> dict[str, Any]:
    """Least-squares fit of ``log R = log A - b log n`` to the per-``n`` means, with a bootstrap interval.

    Args:
        n: the sample sizes, ``(N,)`` distinct, at least 2.
        samples: for each ``n``, the per-instance errors (each list non-empty, positive means).
        resamples: bootstrap resamples; each redraws every ``n``'s instances with replacement.
        seed: seed of the bootstrap generator.

    Returns:
        ``{"A", "b", "b_low", "b_high", "A_low", "A_high", "n", "mean", "local_b"}``: the fit to the means,
        the 2.5% / 97.5% percentiles of the bootstrap fits (95% interval), and the local exponents
        ``-(log R_{k+1} - log R_k) / (log n_{k+1} - log n_k)`` between consecutive sizes in increasing
        order, ``(N - 1,)``: a single b describes the curve only where these agree.

    Raises:
        DataError: fewer than two sizes, an empty sample, or a non-positive mean (no logarithm).
    """
    from transferlab.errors import DataError

    sizes = np.asarray(n, dtype=float)
    if sizes.size < 2 or np.unique(sizes).size != sizes.size or any(len(s) == 0 for s in samples):
        raise DataError(
            f"a power-law fit needs at least two distinct n with a non-empty sample each, got n = {list(n)}")
    means = np.array([np.mean(s) for s in samples])
    if np.any(means <= 0):
        raise DataError(f"a power-law fit needs positive mean errors, got {means.tolist()}")
    rng = np.random.default_rng(seed)
    boot = np.stack([np.asarray(s, float)[rng.integers(0, len(s), (resamples, len(s)))].mean(axis=1) for s in samples],
                    axis=1)  # (resamples, N)
    x = np.log(sizes) - np.log(sizes).mean()

    def slope_intercept(logy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slope = (logy - logy.mean(axis=-1, keepdims=True)) @ x / (x @ x)
        return -slope, np.exp(logy.mean(axis=-1) - slope * np.log(sizes).mean())

    b, A = slope_intercept(np.log(means))
    order = np.argsort(sizes)
    local_b = -np.diff(np.log(means[order])) / np.diff(np.log(sizes[order]))
    b_boot, A_boot = slope_intercept(np.log(np.maximum(boot, np.finfo(float).tiny)))
    return {"A": float(A), "b": float(b), "b_low": float(np.quantile(b_boot, 0.025)),
            "b_high": float(np.quantile(b_boot, 0.975)), "A_low": float(np.quantile(A_boot, 0.025)),
            "A_high": float(np.quantile(A_boot, 0.975)), "n": [int(v) for v in sizes], "mean": means.tolist(),
            "local_b": local_b.tolist()}


def _per_instance(rows: list[dict[str, Any]], field: str) -> dict[tuple[int, int], float]:
    """``{(replicate, instance): value}`` of a per-instance field over converged instances of ``rows``."""
    return {(r["replicate"], i): v for r in rows for i, (v, ok) in enumerate(zip(r[field], r["converged"], strict=True))
            if ok}


def _stats(values: list[float]) -> tuple[float, float | None]:
    from transferlab.report.plots import mean_se

    return mean_se(np.asarray(values, dtype=float))


def _analyze_setting(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first = rows[0]
    scratch_rows = [r for r in rows if r["protocol"] == "scratch"]
    transfer_rows = [r for r in rows if r["protocol"] == "transfer"]
    sc = {n: _per_instance(g, "risk_scratch_instances")
          for (n,), g in sorted(ResultTable(scratch_rows).group_by("n").items())}
    tr = {(mu, n): _per_instance(g, "risk_transfer_instances")
          for (mu, n), g in sorted(ResultTable(transfer_rows).group_by("mu", "n").items())}
    total = {p: sum(len(r["converged"]) for r in rows if r["protocol"] == p) for p in ("transfer", "scratch")}
    dropped = {p: sum(not ok for r in rows if r["protocol"] == p for ok in r["converged"]) for p in total}
    scratch_table = []
    for n, values in sc.items():
        mean, se = _stats(list(values.values())) if values else (None, None)
        scratch_table.append({"n": n, "risk_scratch": mean, "se": se, "instances": len(values)})
    usable = [(n, list(v.values())) for n, v in sorted(sc.items()) if v]
    fit = None
    if len(usable) >= 2:
        fit = fit_power_law([n for n, _ in usable], [v for _, v in usable])
        local = dict(zip([n for n, _ in usable[1:]], fit["local_b"], strict=True))
        for row in scratch_table:  # the exponent between this n and the previous usable one (blank for the first)
            if row["n"] in local:
                row["local_b"] = local[row["n"]]
    # floors and kernels: one value per (replicate, instance) and mu (the same in every n of that mu)
    kernel = []
    for (mu,), group in sorted(ResultTable(transfer_rows).group_by("mu").items()):
        per = {name: {(r["replicate"], i): v for r in group for i, v in enumerate(r[name])}
               for name in ("floor_instances", "target_norm2_instances", "kernel_cka_instances",
                            "kernel_cka_init_instances", "kernel_cka_target_instances")}
        ok = _per_instance(group, "kernel_cka_instances")
        floor, floor_se = _stats(list(per["floor_instances"].values()))
        # the closed form is exact up to rounding of order eps ||f_t||^2: below this the floor is zero (no boundary)
        zero = FLOOR_ROUNDING * max(per["target_norm2_instances"].values())
        # no converged pretraining at this mu: no agreement to report (None, never a NaN in the tables)
        cka, cka_se = _stats(list(ok.values())) if ok else (None, None)
        row = {"mu": mu, "floor": floor, "floor_se": floor_se,
               "floor_fraction": float(np.mean([per["floor_instances"][k] / per["target_norm2_instances"][k]
                                                for k in per["floor_instances"]])),
               "cka": cka, "cka_se": cka_se, "agrees": cka is not None and cka >= KERNEL_AGREEMENT_THRESHOLD,
               "cka_init": _stats(list(per["kernel_cka_init_instances"].values()))[0],
               "cka_target": _stats(list(per["kernel_cka_target_instances"].values()))[0],
               "n_star": (fit["A"] / floor) ** (1.0 / fit["b"]) if fit is not None and floor > zero else None,
               "gram_student": group[0]["gram_student"], "gram_source": group[0]["gram_source"]}
        kernel.append(row)
    transfer_table = []
    for (mu, n), values in tr.items():
        mean, se = _stats(list(values.values())) if values else (None, None)
        paired = [sc[n][k] - v for k, v in values.items() if n in sc and k in sc[n]]
        t, t_se = _stats(paired) if paired else (None, None)
        transfer_table.append({"mu": mu, "n": n, "risk_transfer": mean, "se": se, "instances": len(values),
                               "T": t, "T_se": t_se, "paired_instances": len(paired)})
    label = (f"d = {first['d']}, m* = {first['m_star']}, m = {first['m']}, {first['teacher_weights']} teacher weights, "
             f"sigma = {first['sigma']:g}, init {first['init_scale']:g}, lr {first['lr']:g} m")
    return {"label": label, "first": {f: first[f] for f in _SETTING_FIELDS}, "fit": fit, "kernel": kernel,
            "scratch": sc, "transfer": tr, "scratch_table": scratch_table, "transfer_table": transfer_table,
            "total": total, "dropped": dropped}


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    plan = []
    for s in results.data.get("settings", []):
        where = f" ({s['label']})"
        dropped = (f" Instances whose training missed its tolerance are left out ({s['dropped']['transfer']} of "
                   f"{s['total']['transfer']} pretrainings, {s['dropped']['scratch']} of {s['total']['scratch']} "
                   "scratch runs).")
        fit = s["fit"]
        fit_text = ("" if fit is None else f" Black line: the fit R_sc = A n^-b with b = {fit['b']:.2f} "
                    f"(95% bootstrap interval {fit['b_low']:.2f}..{fit['b_high']:.2f}; the paper reports b ~ 1.18).")
        if s["scratch_table"] or s["transfer_table"]:
            plan.append((f"fate_relu_errors{s['slug']}",
                         f"Population test error against the number n of target samples{where}, log-log. Black "
                         "squares: the student trained from scratch on the n samples; coloured circles: linear "
                         "transfer (readout refit by kernel ridge regression on the features pretrained on the "
                         "source teacher), one colour per fraction mu of teacher neurons removed; dashed lines of "
                         "the same colour: the floor ||P_perp f_t||^2 of each mu (closed form). Bars: ± 2 standard "
                         "errors over instances." + fit_text + dropped, functools.partial(_errors_figure, s)))
        if s["transfer_table"] and s["scratch_table"]:
            plan.append((f"fate_relu_phase{s['slug']}",
                         f"Phase diagram{where}: transferability T = R_sc - R_transfer (paired per instance) over the "
                         "fraction mu of teacher neurons missing from the source (vertical) and the number n of "
                         "target samples (horizontal, log scale). Red: linear transfer beats scratch training; "
                         "blue: it loses. Grey circles: the predicted boundary A n^-b = ||P_perp f_t||^2 from the "
                         "scratch power-law fit and the closed-form floor (transfer should win left of it)." + dropped,
                         functools.partial(_phase_figure, s)))
        if s["kernel"]:
            plan.append((f"fate_relu_gram{s['slug']}",
                         f"Gram matrices on {GRAM_FIGURE_POINTS} Gaussian probe inputs{where}, instance 0: left, the "
                         "pretrained student's feature kernel (1/m) sum_i relu(w_i.x) relu(w_i.x'); right, the source "
                         "teacher's (1/m_s) sum_j relu(w_sj.x) relu(w_sj.x'); each divided by its mean diagonal "
                         "entry (one colour scale); one row per mu. Titles: the linear CKA "
                         f"of the two feature sets on the probe inputs, mean over instances (agreement threshold "
                         f"{KERNEL_AGREEMENT_THRESHOLD}), with the initial student's and the target teacher's for "
                         "comparison.", functools.partial(_gram_figure, s)))
            plan.append((f"fate_relu_floor{s['slug']}",
                         f"The out-of-RKHS norm ||P_perp f_t||^2 of the target teacher outside the span of the source "
                         f"teacher's neurons against mu{where} (closed form, arc-cosine kernel; mean ± 2 SE over "
                         "instances), and the fraction ||P_perp f_t||^2 / ||f_t||^2 (right axis, dashed).",
                         functools.partial(_floor_figure, s)))
    return plan


def _errors_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.5, 4.4))
    ax = fig.add_subplot()
    rows = [r for r in s["scratch_table"] if r["risk_scratch"] is not None]
    if rows:
        ax.errorbar([r["n"] for r in rows], [r["risk_scratch"] for r in rows],
                    yerr=[2 * (r["se"] or 0.0) for r in rows], fmt="ks", ms=5, capsize=2, label="scratch")
    fit = s["fit"]
    if fit is not None:
        grid = np.geomspace(min(fit["n"]), max(fit["n"]), 50)
        ax.plot(grid, fit["A"] * grid ** -fit["b"], "k-", lw=1, label=f"fit, b = {fit['b']:.2f}")
    mus = sorted({r["mu"] for r in s["transfer_table"]})
    floors = {k["mu"]: k["floor"] for k in s["kernel"]}
    for j, mu in enumerate(mus):
        rows = [r for r in s["transfer_table"] if r["mu"] == mu and r["risk_transfer"] is not None]
        if rows:
            ax.errorbar([r["n"] for r in rows], [r["risk_transfer"] for r in rows],
                        yerr=[2 * (r["se"] or 0.0) for r in rows], fmt="o-", color=f"C{j}", ms=4, capsize=2,
                        label=f"transfer, mu = {mu:g}")
        if floors.get(mu, 0) > 0:
            ax.axhline(floors[mu], color=f"C{j}", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target samples n")
    ax.set_ylabel("population test error")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _phase_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import diverging_norm, draw_map

    mus = np.array(sorted({r["mu"] for r in s["transfer_table"]}))
    sizes = np.array(sorted({r["n"] for r in s["transfer_table"]}), dtype=float)
    grid = np.full((mus.size, sizes.size), np.nan)
    for r in s["transfer_table"]:
        if r["T"] is not None:
            grid[np.searchsorted(mus, r["mu"]), np.searchsorted(sizes, r["n"])] = r["T"]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    mesh = draw_map(ax, np.log10(sizes), mus, grid, diverging_norm(grid, cap=float(np.nanmax(np.abs(grid)))
                                                                     if np.isfinite(grid).any() else 1.0))
    boundary = [(math.log10(k["n_star"]), k["mu"]) for k in s["kernel"] if k["n_star"] is not None]
    if boundary:
        ax.plot(*zip(*boundary, strict=True), "o-", color="grey", mfc="none", ms=7, lw=1,
                label="A n^-b = ||P_perp f_t||^2")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xticks(np.log10(sizes), [f"{int(n)}" for n in sizes])
    ax.set_xlabel("target samples n (log scale)")
    ax.set_ylabel("fraction of neurons removed, mu")
    fig.colorbar(mesh, ax=ax, label="T = R_sc - R_transfer")
    fig.tight_layout()
    return fig


def _gram_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    rows = s["kernel"]
    fig = Figure(figsize=(7.6, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (left, right), k in zip(axes, rows, strict=True):
        # each Gram divided by its mean diagonal: the two kernels' overall scales differ (CKA ignores scale)
        student, source = (np.asarray(k[g]) / np.mean(np.diag(np.asarray(k[g])))
                           for g in ("gram_student", "gram_source"))
        vmax = max(student.max(), source.max())
        left.imshow(student, vmin=0, vmax=vmax, cmap="viridis")
        image = right.imshow(source, vmin=0, vmax=vmax, cmap="viridis")
        cka = "n/a (no pretraining converged)" if k["cka"] is None else f"{k['cka']:.3f}"
        left.set_title(f"student, mu = {k['mu']:g}: CKA {cka} (init {k['cka_init']:.2f})", fontsize=9)
        right.set_title(f"source teacher (target teacher's CKA {k['cka_target']:.2f})", fontsize=9)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(image, ax=right, fraction=0.046)
    fig.tight_layout()
    return fig


def _floor_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    rows = s["kernel"]
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot()
    mus = [k["mu"] for k in rows]
    ax.errorbar(mus, [k["floor"] for k in rows], yerr=[2 * (k["floor_se"] or 0.0) for k in rows], fmt="o-", color="C0",
                capsize=2)
    ax.set_xlabel("fraction of neurons removed, mu")
    ax.set_ylabel("||P_perp f_t||^2", color="C0")
    twin = ax.twinx()
    twin.plot(mus, [k["floor_fraction"] for k in rows], "s--", color="C3")
    twin.set_ylabel("||P_perp f_t||^2 / ||f_t||^2", color="C3")
    fig.tight_layout()
    return fig
