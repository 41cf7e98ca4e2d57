"""Batched full-batch gradient descent for deep linear networks (Tahir, Ganguli & Rotskoff 2024).

Every instance of a :class:`~transferlab.nets.DeepLinear` runs its own GD on its own objective;
instances share nothing but the tensor they are stacked in, so a result never depends on what else
is in the batch. The update is plain GD with torch-SGD-style weight decay,

    W_l <- W_l - eta_i (dL_i/dW_l + wd W_l),

and instance i stops (its weights freeze) at the first step where the excess loss
L_i - min L_i <= tol (the paper's "train loss <= least-squares minimum + tol"), or after
``max_steps`` updates. Two opt-in changes bring GD closer to the gradient flow the theory describes
(``GDSettings.stop_rule`` and ``warmup_steps``; measured in benchmarks/fate_offsets.py): stop at
L_i - min L_i <= tol * lambda_min,i instead, which bounds the squared distance to the minimiser in
the loss's directions by tol whatever the conditioning, and run the first steps at a fraction of the
step size.

Two gradient paths compute the same dL/dW_l:

- ``"end_to_end"`` (default, the cheapest exact one): with s_l = W_{l+1} ... W_L (a vector),
  beta = W_1 s_1 and g = dL/dbeta from :class:`LeastSquaresObjective`,
      dL/dW_l = (W_1 ... W_{l-1})^T g s_l^T,
  i.e. 2L - 2 matrix-vector products and L - 1 rank-one updates, never forming X W_1 (O(n d^2)).
  It runs in the objective's spectral coordinates: g lies in row(X) (dimension r = min(n, d)), so
  only M = Q W_1 (r x d) moves, and for L = 2 the hidden side stays in a (r + 1)-dimensional
  subspace; the cost per instance and step is O(r^2) for L = 2 with n < d, O(r d + (L - 2) d^2)
  in general, instead of O(L d^2).
- ``"autograd"``: the plain reference, autograd through the layer-by-layer forward pass.

For L = 2 on the end-to-end path the loop is fused (``GDSettings.fused``, the default): blocks of
``check_every`` steps run without per-step bookkeeping (no masks, no step counters, no host
synchronisation; seven tensor operations a step, :func:`_two_layer_steps`), recording every step's
excess loss. After a block, an instance whose excess first fell to <= tol at block step j is rewound
to the block's start and replays exactly j steps, so the stopping rule, the step counts and the
weights are those of the step-by-step loop (``fused=False``), up to floating-point rounding. Once
half the batch has stopped, the rest continue as a smaller batch. For large reduced states
(r k >= 256^2) the rank-one updates of a block are deferred and applied as one matrix product
(:func:`_two_layer_steps_deferred`: two reads of M per step instead of two reads and a write).

Every tensor is created on the network's device: the trainer runs wherever ``net`` and
``objective`` live (CPU or CUDA).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets import DeepLinear
from transferlab.train.objectives import LeastSquaresObjective, _bvm

__all__ = ["GDResult", "GDSettings", "train_gd"]

logger = logging.getLogger("transferlab")

#: A loss above ``_DIVERGENCE_FACTOR * (1 + initial excess)`` counts as divergence.
_DIVERGENCE_FACTOR = 1e8
#: lr * lambda_max of the automatic step size (``GDSettings.lr = None``).
_AUTO_STEP = 0.2
#: P of a trained balanced L = 2 net fitting a unit-norm teacher (:class:`GDSettings`): a step with
#: lr * lambda_max * _TRAINED_P >= 1 turns unstable as training approaches the solution, whatever the init.
_TRAINED_P = 2.0


@dataclass(frozen=True)
class GDSettings:
    """Knobs of :func:`train_gd`.

    Attributes:
        lr: step size. ``None`` (default) picks per instance eta_i = 0.2 / lambda_max(X_i^T X_i / n)
            (0.2 for the population loss): GD on a deep linear net is stable while
            eta * 2 lambda_max * P < 2, where P = sum_l prod_{k != l} ||W_k||^2 is the layer
            preconditioner (P = 2 for a balanced L = 2 net with ||beta|| = 1), so this default
            leaves a margin of ~2.5 for unit-norm teachers at L = 2 and still converges at L <= 4.
        max_steps: most updates per instance.
        tol: stop an instance once L - min L <= tol (>= 0; 0 never stops early in practice).
        stop_rule: ``"excess"`` (default, the paper's rule above) or ``"distance"``: stop once
            L - min L <= tol * lambda_min, with lambda_min the smallest nonzero eigenvalue of the
            instance's A = X^T X / n (1 for the population loss); since L - min L >=
            lambda_min ||Q beta - b*||^2 this guarantees ||Q beta - b*||^2 <= tol. The excess rule
            leaves the slow directions of an ill-conditioned A (n near d) unconverged.
        warmup_steps: the first ``warmup_steps`` updates use ``warmup_factor * lr`` (default 0: none).
            Fine-tuning a pretrained net starts with large gradients, and discrete steps in that
            transient break the balancedness gradient flow conserves; smaller early steps cut that
            bias in proportion to the step.
        warmup_factor: the step-size multiplier of the warm-up, in (0, 1].
        weight_decay: wd >= 0, added as wd * W_l to every layer's gradient.
        gradient: ``"end_to_end"`` (fast, exact) or ``"autograd"`` (reference).
        check_every: steps between the (synchronising) divergence and all-stopped checks; for the
            fused loop, the block length.
        fused: L = 2 on the end-to-end path only: run blocks of ``check_every`` steps with the stop
            rule applied exactly afterwards (module docstring); False runs the step-by-step loop
            (the same GD, one masked step at a time).
    """

    lr: float | None = None
    max_steps: int = 20_000
    tol: float = 1e-6
    stop_rule: Literal["excess", "distance"] = "excess"
    warmup_steps: int = 0
    warmup_factor: float = 0.1
    weight_decay: float = 0.0
    gradient: Literal["end_to_end", "autograd"] = "end_to_end"
    check_every: int = 50
    fused: bool = True

    def __post_init__(self) -> None:
        check_real(self.lr, "lr", low=0.0, low_open=True, optional=True)
        check_int(self.max_steps, "max_steps", low=0)
        check_int(self.check_every, "check_every", low=1)
        check_real(self.tol, "tol", low=0.0)
        check_choice(self.stop_rule, "stop_rule", ("excess", "distance"))
        check_int(self.warmup_steps, "warmup_steps", low=0)
        check_real(self.warmup_factor, "warmup_factor", low=0.0, high=1.0, low_open=True)
        check_real(self.weight_decay, "weight_decay", low=0.0)
        check_choice(self.gradient, "gradient", ("end_to_end", "autograd"))
        if not isinstance(self.fused, bool):
            raise ConfigError(f"fused must be a bool, got {self.fused!r}")


@dataclass(frozen=True)
class GDResult:
    """What :func:`train_gd` did, per instance (all shapes (instances,)).

    Attributes:
        steps: number of updates applied.
        converged: whether the stopping rule (L - min L <= tol, or <= tol * lambda_min) was met.
        excess: final excess loss L - min L (float64).
        lr: the step size used (float64).
    """

    steps: torch.Tensor
    converged: torch.Tensor
    excess: torch.Tensor
    lr: torch.Tensor


class _Stepper(Protocol):
    def evaluate(self) -> torch.Tensor:
        """Excess loss at the current weights, (instances,); caches what :meth:`apply` needs."""

    def apply(self, eta: torch.Tensor) -> None:
        """One GD update with per-instance step sizes ``eta`` (instances,) (0 = frozen)."""

    def finish(self) -> None:
        """Write the trained weights back into the network."""


class _EndToEndStepper:
    """GD in reduced coordinates with dL/dW_l = (W_1 ... W_{l-1})^T g s_l^T (module docstring).

    Input space: W_1 is replaced by M = Q W_1 (r x d) with Q the objective's basis; the rest
    N = (I - Q^T Q) W_1 gets no gradient and only shrinks under weight decay, by a tracked scalar.
    Hidden space (L = 2 only): M and w_2 stay in S = span(rows of M(0), w_2(0)) of dimension
    k <= r + 1, because dM = g w_2^T and dw_2 = M^T g; with an orthonormal basis B (d x k) of S the
    state is M B (r x k) and B^T w_2 (k). Both are exact changes of coordinates of the same GD.
    """

    def __init__(self, net: DeepLinear, objective: LeastSquaresObjective, weight_decay: float) -> None:
        self.net = net
        self.objective = objective
        self.weight_decay = weight_decay
        weights = [w.detach() for w in net.weights]
        basis = objective.basis
        self.null_part: torch.Tensor | None = None
        self.null_scale = torch.ones(net.instances, dtype=net.dtype, device=weights[0].device)
        self.hidden_basis: torch.Tensor | None = None
        if basis is not None:
            first = basis @ weights[0]
            if basis.shape[1] < net.d:
                self.null_part = weights[0] - basis.mT @ first
            weights[0] = first
            rank = first.shape[1]
            if len(weights) == 2 and rank + 1 < net.d:
                span = torch.cat([first.mT, weights[1]], dim=2)  # (I, d, r + 1)
                self.hidden_basis = torch.linalg.qr(span).Q
                weights = [first @ self.hidden_basis, self.hidden_basis.mT @ weights[1]]
        self.weights = [w.clone() for w in weights]
        self._factors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._last_grad = self.weights[-1][..., 0]

    def evaluate(self) -> torch.Tensor:
        w = self.weights
        v = w[-1][..., 0].clone()  # a copy: apply() changes w[-1] in place before using the factors
        suffix: list[torch.Tensor] = [v] * len(w)  # suffix[l] = W_{l+1} ... W_L
        for layer in range(len(w) - 2, -1, -1):
            suffix[layer] = v
            v = _bvm(v, w[layer].mT)
        excess, g = self.objective.excess_and_gradient(v)
        factors = []
        u = g  # u = (W_1 ... W_{l-1})^T g
        for layer in range(len(w) - 1):
            factors.append((u, suffix[layer]))
            u = _bvm(u, w[layer])
        self._factors = factors
        self._last_grad = u
        return excess

    def apply(self, eta: torch.Tensor) -> None:
        w = self.weights
        if self.weight_decay:
            shrink = 1.0 - self.weight_decay * eta
            self.null_scale.mul_(shrink)
            for layer in w:
                layer.mul_(shrink[:, None, None])
        for layer, (u, s) in zip(w[:-1], self._factors, strict=True):
            layer.addcmul_(u[:, :, None], (s * eta[:, None])[:, None, :], value=-1.0)
        w[-1][..., 0].addcmul_(self._last_grad, eta[:, None], value=-1.0)

    def finish(self) -> None:
        weights = list(self.weights)
        if self.hidden_basis is not None:
            weights = [weights[0] @ self.hidden_basis.mT, self.hidden_basis @ weights[1]]
        if self.objective.basis is not None:
            weights[0] = self.objective.basis.mT @ weights[0]
            if self.null_part is not None:
                weights[0] += self.null_scale[:, None, None] * self.null_part
        for param, value in zip(self.net.weights, weights, strict=True):
            param.copy_(value)


class _AutogradStepper:
    """Reference: autograd through the plain forward pass X W_1 ... W_L, in the full space."""

    def __init__(self, net: DeepLinear, objective: LeastSquaresObjective, weight_decay: float) -> None:
        self.net = net
        self.objective = objective
        self.weight_decay = weight_decay
        self._grads: tuple[torch.Tensor, ...] = ()

    def evaluate(self) -> torch.Tensor:
        params = list(self.net.weights)
        with torch.enable_grad():
            if self.objective.X is None:
                loss = self.objective.loss(self.net.end_to_end())
            else:
                loss = self.objective.loss(None, self.net(self.objective.X))
            self._grads = torch.autograd.grad(loss.sum(), params)
        return loss.detach().to(torch.float64) - self.objective.minimum

    def apply(self, eta: torch.Tensor) -> None:
        for param, grad in zip(self.net.weights, self._grads, strict=True):
            step = grad + self.weight_decay * param if self.weight_decay else grad
            param.sub_(eta[:, None, None] * step)

    def finish(self) -> None:
        """Nothing to do: the reference updates the network's parameters directly."""


def train_gd(
    net: DeepLinear,
    objective: LeastSquaresObjective,
    settings: GDSettings | None = None,
) -> GDResult:
    """Train every instance of ``net`` in place by full-batch GD on its own ``objective``.

    Args:
        net: networks with I instances, weights (I, d, d) ... (I, d, 1).
        objective: I least-squares objectives over beta in R^d (same d and dtype as ``net``).
        settings: step size, stopping rule, weight decay, gradient path (default ``GDSettings()``).

    Returns:
        Per-instance steps, convergence flags, final excess losses and step sizes.

    Raises:
        DataError: ``net`` and ``objective`` disagree in instances, d or dtype.
        TrainingDiverged: some instance's loss became non-finite or exploded; the message names
            the instances and the cause: too large a step size or too large initial weights.
    """
    settings = settings or GDSettings()
    if (objective.instances, objective.d, objective.dtype) != (net.instances, net.d, net.dtype):
        raise DataError(
            f"objective (instances={objective.instances}, d={objective.d}, {objective.dtype}) does not match "
            f"net (instances={net.instances}, d={net.d}, {net.dtype})"
        )
    device = net.weights[-1].device
    if settings.lr is None:
        lr = _AUTO_STEP / objective.curvature
    else:
        lr = torch.full((net.instances,), settings.lr, dtype=torch.float64, device=device)
    lr_work = lr.to(net.dtype)
    threshold = torch.full((net.instances,), settings.tol, dtype=torch.float64, device=device)
    if settings.stop_rule == "distance":
        threshold = threshold * objective.smallest_curvature.to(device)
    with torch.no_grad():
        stepper: _Stepper
        if settings.gradient == "end_to_end":
            stepper = _EndToEndStepper(net, objective, settings.weight_decay)
        else:
            stepper = _AutogradStepper(net, objective, settings.weight_decay)
        excess = stepper.evaluate()
        stop_at = threshold.to(excess.dtype)  # compared in the working dtype, as a scalar tol would be
        limit = _DIVERGENCE_FACTOR * (1.0 + excess.to(torch.float64).clamp(min=0.0))
        step_scale = lr * objective.curvature.to(torch.float64)  # lr * lambda_max, to name a divergence's cause
        start_p = _layer_preconditioner(net)

        def check(values: torch.Tensor, step: int) -> None:
            _check_divergence(values, limit, lr, step_scale, start_p, step)

        if settings.fused and isinstance(stepper, _EndToEndStepper) and net.layers == 2:
            steps = _train_two_layer_fused(stepper, lr_work, stop_at, settings, check)
        else:
            active = torch.ones(net.instances, dtype=torch.bool, device=device)
            steps = torch.zeros(net.instances, dtype=torch.int64, device=device)
            for step in range(settings.max_steps):
                if step:
                    excess = stepper.evaluate()
                active &= excess > stop_at
                if step % settings.check_every == 0:
                    check(excess, step)
                    if not bool(active.any()):
                        break
                steps += active
                warm = settings.warmup_factor if step < settings.warmup_steps else 1.0
                stepper.apply(lr_work * active * warm)
        excess = stepper.evaluate().to(torch.float64)
        check(excess, int(steps.max()))
        stepper.finish()
    converged = excess <= threshold
    if not bool(converged.all()) and settings.tol > 0:
        logger.debug("GD: %d of %d instances did not meet the %s stopping rule (tol %g) in %d steps",
                     int((~converged).sum()), net.instances, settings.stop_rule, settings.tol, settings.max_steps)
    return GDResult(steps=steps, converged=converged, excess=excess, lr=lr)


def _two_layer_steps(M: torch.Tensor, w: torch.Tensor, objective: LeastSquaresObjective, eta2: torch.Tensor,
                     excess: torch.Tensor, weight_decay: float) -> None:
    """Run ``eta2.shape[0]`` GD steps of an L = 2 net in reduced coordinates, in place, unmasked.

    State (see :class:`_EndToEndStepper`): M = Q W_1 [B] (I, r, k) and w = [B^T] w_2 (I, k); the
    predictor's coordinates are v = M w (I, r). Step j, with a_j = ``eta2[j]`` = 2 eta_j (I,):
        delta = v - b*,  h = lambda * delta  (dL/dv = 2 h),  excess[j] = delta . h,  e = a_j h,
        M <- (1 - wd eta_j) M - e w^T,   w <- (1 - wd eta_j) w - M_old^T e,
    the gradients dL/dM = (2 h) w^T and dL/dw = M^T (2 h) of L(M w). ``excess[j]`` (I,) receives the
    excess loss before update j. Frozen instances have eta = 0 and stay exactly where they are.
    Without weight decay a step is seven kernel calls on (I, 1, .) rows: the offset, the dot product
    and the rank-one update are folded into batched products (at the paper's sizes a call's fixed
    cost is comparable to its arithmetic, so fewer calls are faster).
    """
    instances, r, k = M.shape
    # every view and buffer made once
    lam, neg_target = objective.eigenvalues[:, None, :], -objective.target[:, None, :]
    w_row, M_t = w[:, None, :], M.mT  # views: they follow the in-place updates of w and M
    delta = torch.empty(instances, 1, r, dtype=M.dtype, device=M.device)
    h = torch.empty_like(delta)
    h_col = h.mT  # (I, r, 1) view
    u = torch.empty(instances, 1, k, dtype=M.dtype, device=M.device)
    records = excess[:, :, None, None].unbind(0)  # (I, 1, 1) each
    etas = eta2[:, :, None, None].unbind(0)  # (I, 1, 1) each
    for j, step in enumerate(etas):
        torch.baddbmm(neg_target, w_row, M_t, out=delta)  # M w - b*: the (1 x k)(k x r) form is the fastest here
        torch.mul(lam, delta, out=h)
        torch.bmm(delta, h_col, out=records[j])  # delta . h
        h.mul_(step)  # e = a_j h
        torch.bmm(h, M, out=u)  # M_old^T e
        shrink = 1.0 - (0.5 * weight_decay) * step if weight_decay else None
        if shrink is not None:
            M.mul_(shrink)
        M.baddbmm_(h_col, w_row, alpha=-1.0)  # the rank-one update e w_old^T (w is not updated yet)
        if shrink is not None:
            w_row.mul_(shrink)
        w_row.sub_(u)


def _two_layer_steps_deferred(M: torch.Tensor, w: torch.Tensor, objective: LeastSquaresObjective,
                              eta2: torch.Tensor, excess: torch.Tensor, weight_decay: float) -> None:
    """:func:`_two_layer_steps` without weight decay, with the rank-one updates of M deferred.

    Within the call, M stays at its entry value M_0 and the updates collect in the rows of
    G (I, m, r) (row j = eta_j (2 h_j)) and V (I, m, k) (row j = w_j before step j), so the current
    M_j = M_0 - G_{<j}^T V_{<j}. The two matrix-vector products of a step then read M_0 once each
    and the pending rank-j part costs O((r + k) j); the outer-product pass of every step (a read and
    a write of M) becomes one (r x m)(m x k) matrix product at the end. Same GD, other rounding.
    ``weight_decay`` is taken for the kernels' common signature and must be 0 (:func:`_steps_kernel`).
    """
    lam, target = objective.eigenvalues, objective.target
    m = eta2.shape[0]
    G = torch.empty(M.shape[0], m, M.shape[1], dtype=M.dtype, device=M.device)
    V = torch.empty(M.shape[0], m, M.shape[2], dtype=M.dtype, device=M.device)
    for j in range(m):
        delta = _bvm(w, M.mT)  # (I, r): M_0 w
        if j:
            delta.sub_(_bvm(_bvm(w, V[:, :j].mT), G[:, :j]))  # - G^T (V w)
        delta.sub_(target)
        h = lam * delta
        torch.sum(delta.mul_(h), -1, out=excess[j])
        u = _bvm(h, M)  # (I, k): M_0^T h
        if j:
            u.sub_(_bvm(_bvm(h, G[:, :j].mT), V[:, :j]))  # - V^T (G h)
        step = eta2[j][:, None]
        torch.mul(h, step, out=G[:, j])
        V[:, j].copy_(w)
        w.addcmul_(u, step, value=-1.0)
    M.baddbmm_(G.mT, V, alpha=-1.0)


#: Smallest r * k (per-instance size of M) from which deferring the rank-one updates pays: below it the
#: extra small products of :func:`_two_layer_steps_deferred` cost more than the outer-product pass saved.
_DEFER_MIN_SIZE = 256 * 256


def _steps_kernel(M: torch.Tensor, weight_decay: float) -> Callable[..., None]:
    """The block kernel for M (I, r, k): deferred updates for large M without weight decay, else per step."""
    if not weight_decay and M.shape[1] * M.shape[2] >= _DEFER_MIN_SIZE:
        return _two_layer_steps_deferred
    return _two_layer_steps


def _step_scale(settings: GDSettings, start: int, length: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """The step-size multipliers of steps ``start`` .. ``start + length - 1``, (length,): the warm-up's
    ``warmup_factor`` before step ``warmup_steps``, 1 after."""
    scale = torch.ones(length, dtype=dtype, device=device)
    scale[: max(0, min(length, settings.warmup_steps - start))] = settings.warmup_factor
    return scale


def _train_two_layer_fused(stepper: _EndToEndStepper, lr: torch.Tensor, threshold: torch.Tensor,
                           settings: GDSettings, check: Callable[[torch.Tensor, int], None]) -> torch.Tensor:
    """The fused GD loop of an L = 2 ``stepper`` (module docstring); returns the steps per instance.

    Blocks of ``check_every`` steps run unmasked (:func:`_steps_kernel`) from a saved state. An
    instance still training whose recorded excess first satisfies excess <= ``threshold`` (its tol, or
    tol * lambda_min, in the working dtype) at block step j is
    restored to the block's start and replays exactly j steps alone; the step-by-step loop stops it
    at that same step. Divergence is checked on every recorded step, up to each instance's stop.
    Once at most half of the working set still trains, the stopped instances are written back and
    the rest continue as a smaller batch (instances never interact, so this changes no number).
    """
    M_all, w_all = stepper.weights[0], stepper.weights[1][..., 0]  # w_all is a view into the weights
    objective, wd = stepper.objective, stepper.weight_decay
    instances, device = M_all.shape[0], M_all.device
    steps = torch.zeros(instances, dtype=torch.int64, device=device)
    rows = torch.arange(instances, device=device)  # the working set, as indices into all instances
    # at first the working set is everything, in place; every instance in it has run `done` steps
    M, w, work, lr_rows, stop_at = M_all, w_all, objective, lr, threshold
    active = torch.ones(instances, dtype=torch.bool, device=device)  # over the working set
    kernel = _steps_kernel(M_all, wd)
    done = 0
    while done < settings.max_steps:
        block = min(settings.check_every, settings.max_steps - done)
        scale = _step_scale(settings, done, block, M.dtype, device)
        eta2 = (2.0 * lr_rows * active) * scale[:, None]
        saved = M.clone(), w.clone()
        recorded = torch.empty(block, rows.numel(), dtype=M.dtype, device=device)
        kernel(M, w, work, eta2, recorded, wd)
        hit = (recorded <= stop_at) & active  # (block, working set)
        first = (hit.cumsum(0) == 0).sum(0)  # steps before the first hit (block if none) = steps applied
        live = (torch.arange(block, device=device)[:, None] <= first) & active  # an instance's own steps
        worst = torch.zeros(instances, dtype=torch.float64, device=device)
        worst[rows] = torch.where(live, recorded, 0.0).amax(0).to(torch.float64)  # amax keeps NaN and inf
        check(worst, done)
        applied = torch.where(active, first, 0)
        stopping = torch.nonzero(hit.any(0))[:, 0]
        if stopping.numel():
            _replay(M, w, saved, stopping, first[stopping], work, lr_rows, scale, wd, kernel)
            active[stopping] = False
        if wd:
            shrink = (1.0 - wd * lr_rows * scale[:, None]).cumprod(0)  # (block, working set): after step j
            last = (applied - 1).clamp(min=0)
            own = shrink[last, torch.arange(rows.numel(), device=device)]
            stepper.null_scale[rows] *= torch.where(applied > 0, own, 1.0)
        steps[rows] += applied
        done += block
        still = int(active.sum())
        if not still:
            break
        if still <= rows.numel() // 2:
            if M is not M_all:
                M_all[rows], w_all[rows] = M, w
            keep = torch.nonzero(active)[:, 0]
            rows = rows[keep]
            M, w, work, lr_rows = M_all[rows], w_all[rows], _subset(objective, rows), lr[rows]
            stop_at = threshold[rows]
            active = torch.ones(rows.numel(), dtype=torch.bool, device=device)
    if M is not M_all:
        M_all[rows], w_all[rows] = M, w
    return steps


def _subset(objective: LeastSquaresObjective, rows: torch.Tensor) -> LeastSquaresObjective:
    """The spectral part of ``objective`` (eigenvalues, target, minimum) at instances ``rows``: what
    the two-layer kernels read."""
    return LeastSquaresObjective(minimum=objective.minimum[rows], eigenvalues=objective.eigenvalues[rows],
                                 target=objective.target[rows])


def _replay(M: torch.Tensor, w: torch.Tensor, saved: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor,
            count: torch.Tensor, objective: LeastSquaresObjective, lr: torch.Tensor, scale: torch.Tensor,
            weight_decay: float, kernel: Callable[..., None]) -> None:
    """Rewind instances ``rows`` of (M, w) to ``saved`` and run ``count[i]`` steps for row i, step j of
    the block at step size ``scale[j] * lr``."""
    sub_M, sub_w = saved[0][rows], saved[1][rows]
    length = int(count.max())
    if length:
        eta2 = 2.0 * lr[rows] * (torch.arange(length, device=count.device)[:, None] < count) * scale[:length, None]
        scratch = torch.empty(length, rows.numel(), dtype=M.dtype, device=M.device)
        kernel(sub_M, sub_w, _subset(objective, rows), eta2.to(M.dtype), scratch, weight_decay)
    M[rows] = sub_M
    w[rows] = sub_w


def _layer_preconditioner(net: DeepLinear) -> torch.Tensor:
    """``(I,)`` float64: P = sum_l prod_{k != l} ||W_k||_F^2 of each instance (see :class:`GDSettings`;
    Frobenius norms bound the spectral ones from above). A small init has P << 1; P = inf when the
    weights' norms overflow."""
    squares = torch.stack([torch.linalg.vector_norm(w.detach().to(torch.float64), dim=(-2, -1)) ** 2
                           for w in net.weights])  # (L, I)
    return sum(torch.cat([squares[:l], squares[l + 1:]]).prod(0) for l in range(squares.shape[0]))


def _check_divergence(
    excess: torch.Tensor, limit: torch.Tensor, lr: torch.Tensor, step_scale: torch.Tensor, start_p: torch.Tensor,
    step: int,
) -> None:
    """Raise :class:`TrainingDiverged` for instances whose excess loss is non-finite or > ``limit``.

    GD is stable while lr * lambda_max * P < 1 (:class:`GDSettings`). The message names the cause of
    the first bad instance: the step size when ``step_scale`` (lr * lambda_max) is unstable for a
    trained net (P = ``_TRAINED_P``), the init scale when ``start_p`` (P of the initial weights) is
    unstable even for the automatic step; the step size when neither is clear.
    """
    bad = ~torch.isfinite(excess) | (excess.to(torch.float64) > limit)
    if bool(bad.any()):
        which = torch.nonzero(bad)[:, 0].tolist()
        i = which[0]
        scale, p = float(step_scale[i]), float(start_p[i])
        causes = []
        if scale * _TRAINED_P >= 1 or p * _AUTO_STEP < 1:
            causes.append(f"the learning rate (lr * lambda_max = {scale:.3g}; the automatic step size uses {_AUTO_STEP})")
        if p * _AUTO_STEP >= 1:
            causes.append(f"the init scale (P = sum_l prod_(k != l) ||W_k||^2 = {p:.3g} at the start, growing as "
                          "init_scale^(2 (L - 1)); small inits have P << 1)")
        raise TrainingDiverged(
            f"gradient descent diverged at step {step} for instance(s) {which[:10]}"
            f"{' ...' if len(which) > 10 else ''} (lr = {float(lr[i]):.3g}); lower " + " and ".join(causes)
        )
