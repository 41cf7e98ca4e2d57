"""Next-token training of batched language models (:func:`~transferlab.nets.transformer.transformer`) with
early stopping on validation loss.

Objective. For instance i with training tokens s_i (a 1-D byte stream), one step draws B windows of
T + 1 consecutive tokens at offsets o_ib = floor(u_ib (|s_i| - T)), u_ib uniform in [0, 1) (so every
window lies inside s_i), and minimises

    J(theta) = sum_i L_i(theta_i),
    L_i = (1 / (B T)) sum_b sum_{t=1..T} -log p_i(s_i[o_ib + t] | s_i[o_ib], ..., s_i[o_ib + t - 1]),

the mean next-token cross-entropy in nats per token (p_i: instance i's softmax, parameters theta_i).
Instance i's parameters enter only L_i and Adam updates every element on its own, so each instance
follows the trajectory it would follow alone on the same windows (up to float rounding of the batched
matmuls). The window draws ``torch.rand((M, B), generator=generator, dtype=float64)`` once per step, M
the number of streams (1 when every instance shares one stream: then every instance sees the same
windows), are the only use of ``generator``.

Recipe (one for every size; ours, after Kaplan et al. 2020 App. D.6 and Hernandez et al. 2021):
Adam (betas 0.9, 0.95, eps 1e-8, no weight decay, no gradient clipping), peak learning rate
lr(N) = 0.003239 - 0.0001395 ln N (Kaplan et al.'s fit of the best learning rate against the
non-embedding parameter count N, eq. D.1) unless given, linear warm-up from 0 over ``warmup_steps``,
then cosine decay to ``final_lr_fraction`` of the peak at ``max_steps``:

    lr(s) = peak s / W                                                  for s <= W,
    lr(s) = peak [f + (1 - f) (1 + cos(pi (s - W) / (S - W))) / 2]      for W < s <= S,

for step s = 1..S (the rate used by step s).

Early stopping. The validation loss v_i (:func:`lm_loss` on the validation stream: about ``val_tokens``
targets in windows spread evenly over it) is measured on the initial weights (step 0), every ``eval_every``
steps and at ``max_steps``. An evaluation improves instance i when v_i is strictly below all its earlier
ones; the weights of its best evaluation are kept (a snapshot). It *significantly* improves when v_i is
below the loss of the instance's last significant improvement (at first: the initial loss) by more than
``min_delta`` nats; instance i stops at the first evaluation ``patience`` evaluations after its last
significant improvement (the paper's "optimal early-stopping point" is the best evaluation). With
``min_delta = 0`` every improvement is significant: the instance stops ``patience`` evaluations after its
best. A positive ``min_delta`` also stops a run on a plateau, whose loss still creeps down by less than
``min_delta`` per ``patience`` evaluations. Training ends when every instance stopped or at ``max_steps``;
each instance then holds its kept weights. A stopped instance keeps computing inside the batched tensors
but nothing it computes after stopping is recorded. An instance that had not stopped by ``max_steps`` (its
last significant improvement less than ``patience`` evaluations back) is *not converged*
(:attr:`LMResult.converged`), and is reported so.

Divergence: a non-finite training loss of an active instance (checked at every evaluation) or a
non-finite validation loss raises :class:`~transferlab.errors.TrainingDiverged`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets.blocks import BlockNet

__all__ = ["LMResult", "LMSettings", "fit_lm", "kaplan_lr", "lm_loss", "lr_at"]


def kaplan_lr(n_params: float) -> float:
    """Peak learning rate 0.003239 - 0.0001395 ln N (Kaplan et al. 2020, eq. D.1); N non-embedding parameters,
    1 <= N < 1e10 (the formula turns negative at N = exp(0.003239 / 0.0001395) = 1.2e10)."""
    n = check_real(n_params, "N", low=1.0, high=1e10, high_open=True)
    return 0.003239 - 0.0001395 * math.log(n)


@dataclass(frozen=True)
class LMSettings:
    """Knobs of :func:`fit_lm` (the recipe is in the module docstring).

    Attributes:
        batch_size: B, windows per step per instance.
        context: T, tokens per window; ``None``: the model's context.
        max_steps: S, the most optimizer steps.
        warmup_steps: W < S, steps of linear warm-up.
        lr: peak learning rate; ``None``: :func:`kaplan_lr` of the model's N.
        final_lr_fraction: f in [0, 1], the learning rate at step S over the peak.
        eval_every: steps between validation evaluations.
        patience: evaluations after the last significant improvement before an instance stops; ``None``:
            never stop early.
        min_delta: nats by which a validation loss must beat the last significant one to reset the
            patience count (module docstring); 0: every strict improvement does.
        val_tokens: validation targets used, a sample of windows spread over the whole stream
            (:func:`lm_loss`'s ``max_targets``); ``None``: every target.
    """

    batch_size: int = 32
    context: int | None = None
    max_steps: int = 2000
    warmup_steps: int = 100
    lr: float | None = None
    final_lr_fraction: float = 0.1
    eval_every: int = 100
    patience: int | None = 5
    min_delta: float = 0.0
    val_tokens: int | None = 65536

    def __post_init__(self) -> None:
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.context, "context", low=1, optional=True)
        check_int(self.max_steps, "max_steps", low=1)
        check_int(self.warmup_steps, "warmup_steps", low=0, high=self.max_steps - 1, note="below max_steps")
        check_real(self.lr, "lr", low=0.0, low_open=True, optional=True)
        check_real(self.final_lr_fraction, "final_lr_fraction", low=0.0, high=1.0)
        check_int(self.eval_every, "eval_every", low=1)
        check_int(self.patience, "patience", low=1, optional=True)
        check_real(self.min_delta, "min_delta", low=0.0)
        check_int(self.val_tokens, "val_tokens", low=1, optional=True)


def lr_at(step: int, peak: float, settings: LMSettings) -> float:
    """The learning rate of step ``step`` (1..max_steps): warm-up then cosine decay (module docstring)."""
    W, S, f = settings.warmup_steps, settings.max_steps, settings.final_lr_fraction
    if step <= W:
        return peak * step / W
    progress = (step - W) / (S - W)
    return peak * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class LMResult:
    """What :func:`fit_lm` recorded, per instance (shape (I,) unless said otherwise).

    Attributes:
        best_val_loss: float64, validation loss (nats/token) of the kept weights.
        best_step: int64, the step of the kept weights (0: the initial weights were never beaten).
        stop_step: int64, the last step at which the instance was evaluated while active.
        converged: bool, stopped by patience (its validation loss stopped improving by more than
            ``min_delta``); False when it had not stopped by ``max_steps`` or ``patience`` is ``None``.
        train_loss: float64, mean minibatch loss (before each update) over the steps since the previous
            evaluation, at the instance's last active evaluation.
        eval_steps: the steps of the evaluations, starting with 0.
        val_history: (len(eval_steps), I) float64 validation losses; NaN after the instance stopped.
        steps: optimizer steps run (shared by all instances).
        tokens_per_step: B T, training targets per step per instance.
        peak_lr: the peak learning rate used.
    """

    best_val_loss: torch.Tensor
    best_step: torch.Tensor
    stop_step: torch.Tensor
    converged: torch.Tensor
    train_loss: torch.Tensor
    eval_steps: tuple[int, ...]
    val_history: torch.Tensor
    steps: int
    tokens_per_step: int
    peak_lr: float


def _stream(tokens: object, name: str, minimum: int) -> torch.Tensor:
    """A 1-D token array as a CPU tensor of >= ``minimum`` tokens (DataError naming ``name``): uint8 kept
    as is (bytes: 8 times less memory than int64 for a corpus of tens of MB), other integers as int64."""
    arr = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{name} must be a 1-D array of integer tokens, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size < minimum:
        raise DataError(f"{name} has {arr.size} tokens; it needs at least {minimum} (context + 1)")
    return torch.from_numpy(np.ascontiguousarray(arr).astype(arr.dtype if arr.dtype == np.uint8 else np.int64))


def _context(net: BlockNet, context: int | None) -> int:
    if not isinstance(net, BlockNet) or not hasattr(net, "context") or not hasattr(net, "size"):
        raise ConfigError("net must be a transferlab transformer (transferlab.nets.transformer.transformer)")
    if context is None:
        return int(net.context)
    return check_int(context, "context", low=1, high=int(net.context), note="the model's context")


def _device(net: BlockNet) -> torch.device:
    return next(net.parameters()).device


def lm_loss(
    net: BlockNet,
    tokens: object,
    *,
    context: int | None = None,
    max_targets: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-instance mean next-token loss (nats/token) on a shared stream s of n tokens: (I,) float64.

    Every target: the n - 1 targets s[1..n-1] are cut into consecutive windows of T targets (the last one
    shorter); window j predicts s[jT + 1 .. jT + T] from s[jT .. jT + T - 1], so every target is
    predicted once, from the tokens before it inside its window.

    A sample (``max_targets`` < n - 1): k = max(1, max_targets // T) windows of T targets at the evenly
    spaced starts a_j = floor(j (n - T - 1) / (k - 1)), j = 0..k-1 (a_0 = 0; k = 1: a_0 only), so the
    sample spans the whole stream -- every file of a split, not only the first ones (a prefix of a
    split would be its first file or two, unrepresentative of the rest). Needs n >= T + 1.

    Evaluated in eval mode without gradients.
    """
    T = _context(net, context)
    s = _stream(tokens, "tokens", 2).long()
    check_int(max_targets, "max_targets", low=1, optional=True)
    n_targets = s.numel() - 1
    device = _device(net)
    total = torch.zeros(net.instances, dtype=torch.float64, device=device)
    if max_targets is not None and max_targets < n_targets and n_targets >= T:
        k = max(1, max_targets // T)
        starts = torch.tensor([j * (n_targets - T) // (k - 1) for j in range(k)] if k > 1 else [0])
        rows = starts[:, None] + torch.arange(T + 1)
        pieces = [(s[rows[:, :-1]], s[rows[:, 1:]])]
        n_targets = k * T
    else:
        m = n_targets // T
        pieces = [(s[: m * T].view(m, T), s[1 : m * T + 1].view(m, T))] if m else []
        if n_targets > m * T:
            pieces.append((s[m * T : n_targets].view(1, -1), s[m * T + 1 :].view(1, -1)))
    previous = net.training
    net.eval()
    try:
        with torch.no_grad():
            for x, y in pieces:
                for start in range(0, x.shape[0], batch_size):
                    xb = x[start : start + batch_size].to(device)
                    yb = y[start : start + batch_size].to(device)
                    logits = net.forward_from(xb.expand(net.instances, *xb.shape), 0)
                    ce = F.cross_entropy(logits.flatten(0, 2), yb.expand(net.instances, *yb.shape).flatten(),
                                         reduction="none")
                    total += ce.view(net.instances, -1).double().sum(1)
    finally:
        net.train(previous)
    return total / n_targets


def fit_lm(
    net: BlockNet,
    train: object | Sequence[object],
    validation: object,
    settings: LMSettings | None = None,
    *,
    generator: torch.Generator,
) -> LMResult:
    """Train every instance of ``net`` on next-token prediction (module docstring), early-stopped.

    Args:
        net: a transformer from :func:`transferlab.nets.transformer.transformer` (I instances).
        train: one 1-D token stream shared by every instance, or a sequence of I streams (instance i
            trains on the i-th; lengths may differ, each >= T + 1).
        validation: one 1-D token stream, shared (>= 2 tokens).
        settings: :class:`LMSettings` (default: its defaults).
        generator: the source of the window offsets (CPU generator).

    Returns:
        :class:`LMResult`; ``net``'s instances hold their kept (best-validation) weights.

    Raises:
        DataError: a stream is not 1-D integer, is too short, or the number of streams is not I.
        TrainingDiverged: a non-finite training or validation loss.
    """
    settings = settings or LMSettings()
    T = _context(net, settings.context)
    previous_mode = net.training
    I, B = net.instances, settings.batch_size
    device = _device(net)
    if isinstance(train, (list, tuple)):
        if len(train) != I:
            raise DataError(f"train has {len(train)} streams for {I} instances; give one shared stream or one "
                            "per instance")
        streams = [_stream(t, f"train[{i}]", T + 1) for i, t in enumerate(train)]
    else:
        streams = [_stream(train, "train", T + 1)]
    lengths = torch.tensor([s.numel() for s in streams], dtype=torch.float64)
    dtype = torch.uint8 if all(s.dtype == torch.uint8 for s in streams) else torch.int64
    data = torch.zeros(len(streams), int(lengths.max()), dtype=dtype)
    for i, s in enumerate(streams):
        data[i, : s.numel()] = s
    data = data.to(device)
    val = _stream(validation, "validation", 2)
    peak = settings.lr if settings.lr is not None else kaplan_lr(net.size.non_embedding_params)
    params = [p for p in net.parameters() if p.requires_grad]
    fused = True if all(p.device.type in ("cpu", "cuda") for p in params) else None  # as train.loop
    optimizer = torch.optim.Adam(params, lr=peak, betas=(0.9, 0.95), eps=1e-8, fused=fused)
    window = torch.arange(T + 1)
    rows = torch.arange(data.shape[0], device=device).view(-1, 1, 1)

    f64 = {"dtype": torch.float64, "device": device}
    best_val = lm_loss(net, val, context=T, max_targets=settings.val_tokens)
    if not bool(torch.isfinite(best_val).all()):
        raise TrainingDiverged("the validation loss of the initial weights is not finite")
    history = [best_val.clone()]
    eval_steps = [0]
    best_step = torch.zeros(I, dtype=torch.int64, device=device)
    anchor_val, anchor_step = best_val.clone(), torch.zeros(I, dtype=torch.int64, device=device)
    stop_step = torch.zeros(I, dtype=torch.int64, device=device)
    active = torch.ones(I, dtype=torch.bool, device=device)
    converged = torch.zeros(I, dtype=torch.bool, device=device)
    train_loss = torch.full((I,), math.nan, **f64)
    snapshot = [p.detach().clone() for p in params]
    interval = torch.zeros(I, **f64)
    since = 0
    net.train()
    for step in range(1, settings.max_steps + 1):
        u = torch.rand((data.shape[0], B), generator=generator, dtype=torch.float64)
        offsets = (u * (lengths.view(-1, 1) - T)).floor().long()  # (I or 1, B), in 0..len - T - 1
        idx = (offsets.unsqueeze(-1) + window).to(device)  # (I or 1, B, T + 1)
        chunk = data[rows, idx].long()
        if chunk.shape[0] == 1 and I > 1:
            chunk = chunk.expand(I, B, T + 1)
        logits = net.forward_from(chunk[..., :-1], 0)
        losses = F.cross_entropy(logits.flatten(0, 2), chunk[..., 1:].flatten(), reduction="none").view(I, -1).mean(1)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, peak, settings)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        interval += losses.detach().double()
        since += 1
        if step % settings.eval_every and step != settings.max_steps:
            continue
        bad = active & ~torch.isfinite(interval)
        if bool(bad.any()):
            raise TrainingDiverged(f"training loss became non-finite by step {step} in instance(s) "
                                   f"{bad.nonzero().flatten().tolist()} (peak lr {peak:.3g}): lower the learning rate")
        v = lm_loss(net, val, context=T, max_targets=settings.val_tokens)
        if not bool(torch.isfinite(v[active]).all()):
            raise TrainingDiverged(f"validation loss became non-finite at step {step} (peak lr {peak:.3g})")
        train_loss = torch.where(active, interval / since, train_loss)
        interval.zero_()
        since = 0
        history.append(torch.where(active, v, torch.full_like(v, math.nan)))
        eval_steps.append(step)
        stop_step = torch.where(active, step, stop_step)
        better = active & (v < best_val)
        best_val = torch.where(better, v, best_val)
        best_step = torch.where(better, step, best_step)
        with torch.no_grad():
            for kept, p in zip(snapshot, params, strict=True):
                kept[better] = p.detach()[better]
        significant = active & (v < anchor_val - settings.min_delta)
        anchor_val = torch.where(significant, v, anchor_val)
        anchor_step = torch.where(significant, step, anchor_step)
        if settings.patience is not None:
            evals_since = torch.tensor([sum(1 for s in eval_steps if s > b) for b in anchor_step.tolist()],
                                       device=device)
            stopping = active & (evals_since >= settings.patience)
            converged |= stopping
            active &= ~stopping
        if not bool(active.any()):
            break
    with torch.no_grad():
        for kept, p in zip(snapshot, params, strict=True):
            p.copy_(kept)
    net.train(previous_mode)
    return LMResult(best_val_loss=best_val, best_step=best_step, stop_step=stop_step, converged=converged,
                    train_loss=train_loss, eval_steps=tuple(eval_steps), val_history=torch.stack(history),
                    steps=step, tokens_per_step=B * T, peak_lr=peak)
