"""Minibatch SGD / Adam for any :class:`~transferlab.nets.blocks.BlockNet`, all instances at once.

:func:`fit` trains the model ``h -> net.forward_from(h, k)`` (k = ``start_block``) on inputs ``h`` of
block k + 1, i.e. ``net.features(raw, k)`` computed once by the caller (frozen-prefix caching). Blocks
1..k are never touched; of blocks k+1..L and the head, exactly the parameters with
``requires_grad`` train (``net.freeze_first(j)`` freezes more). The objective of one step is

    J(theta) = sum_i L_i(theta_i),   L_i = (1/b) sum_{j in batch_i} l(f_i(h_ij), y_ij),

with l the cross-entropy of the logits (``nn.CrossEntropyLoss``) or the squared error averaged over
the outputs (``nn.MSELoss``). Instance i's parameters theta_i enter only L_i, so dJ/dtheta_i =
dL_i/dtheta_i, and SGD (momentum, weight decay) and Adam update every element on its own: each
instance follows exactly the trajectory of a separate ``nn.Module`` trained by ``torch.optim`` on the
same minibatches (up to float rounding of the batched matmuls).

Reproducibility contract (the only use of ``generator``): at the start of every epoch e = 1, 2, ...,
``fit`` draws ``torch.randperm(n, generator=generator, device=generator.device)`` for instance 0, 1,
..., I-1 in that order, whether or not the instance has stopped; instance i's minibatches in epoch e
are the consecutive slices ``perm_i[s : s + batch_size]``, s = 0, batch_size, ... (the last one may be
shorter). ``generator`` may instead be a sequence of groups ``[(g_1, m_1), (g_2, m_2), ...]`` with
m_1 + m_2 + ... = I: each epoch, g_1 draws the permutations of the first m_1 instances, then g_2 those
of the next m_2, and so on, so instances m_1..m_1+m_2-1 get exactly the permutations a separate
``fit`` of m_2 instances with generator g_2 would draw (several networks, each with its own generator,
trained as one stack; a single generator is the one group ``[(generator, I)]``).

Per-instance frozen blocks (``frozen_blocks``, a length-I sequence of k_i >= ``start_block``): blocks
start_block+1..k_i of instance i are held at their initial values -- after every optimizer step their
slices are copied back, so this is exact for any optimizer, momentum and weight decay included (the
optimizer's state for those slices is never used). Instance i thus trains as if ``freeze_first(k_i)``
had been called on it alone. When the k_i are non-decreasing and every block is made of
:class:`BatchedLinear` and parameter-free layers (MLPs), the frozen prefixes are cached per instance
too (*staged* forward): the features after block k_i of the instances with that k_i are computed
once (eval mode, no gradients), and at every step block j runs only on the instances 0..c_j-1 that
train it (c_j = #{i : k_i < j}, a prefix of the instance axis: the block's parameters are sliced, not
copied), the instances with k_i = j joining its output -- the FLOPs of training each group alone with
``start_block = k_i``. Otherwise every instance runs every block (the same results, more FLOPs).
Validation and test passes run every block for every instance (no gradients).

Validation (with a validation split): the *validated epochs* are e = ``val_every``, 2 ``val_every``,
... and the last epoch ``max_epochs``; after each, v_i(e) = mean validation loss of instance i; v_i(0)
is measured on the initial weights. A validated epoch *improves* when v_i(e) < v_i(e') for every
earlier validated e' and e' = 0 (strictly); the weights of the best validated epoch are kept per
instance (a snapshot of every trainable parameter). Early stopping (with ``patience``): instance i
stops at the first validated epoch e with e - best_epoch_i >= patience (epochs, not validations; hence
patience >= val_every). Training ends when every instance stopped or after ``max_epochs``; then every
instance's parameters are set to its kept weights. Stopped instances keep computing (their minibatches
are in the same tensors) but nothing they compute after stopping is recorded, so their results equal
an independent loop that stopped there. ``val_every`` changes neither the permutation draws nor the
training steps, only when the validation split is evaluated: with few samples an epoch is one step
and validating a large network after each one costs several times the step.

Divergence: every step's per-instance loss is recorded; at the end of each epoch an instance still
active whose loss was non-finite or above 1e4 (1 + L_i(0)) at some step of the epoch (L_i(0): its
first minibatch loss), or whose validation loss is non-finite (validated epochs), raises :class:`TrainingDiverged`
(checked once per epoch, so a GPU is not synchronised every step).

The optimizers are torch's fused ``SGD`` / ``Adam`` kernels on CPU and CUDA (the update rule of the
default implementation, in one pass over each parameter).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets.blocks import BatchedLinear, BlockNet

__all__ = ["LossKind", "TrainResult", "TrainSettings", "evaluate", "fit"]

LossKind = Literal["cross_entropy", "mse"]
_LOSSES = ("cross_entropy", "mse")

#: A still-active instance whose minibatch loss exceeds ``_DIVERGENCE_FACTOR * (1 + L_i(0))`` (L_i(0):
#: its loss on the first minibatch, before any update) has diverged. A loss 10^4 times its start is
#: far beyond any noisy-SGD excursion; ``1 +`` keeps the threshold meaningful when L_i(0) ~ 0.
_DIVERGENCE_FACTOR = 1e4
#: Without early stopping, instance i converged when |T_i(E) - T_i(E-1)| <= rtol T_i(E-1) + atol, with
#: T_i(e) the mean training loss over epoch e: the loss moved by less than 1 % (or by 1e-4, for
#: losses near 0) over the last epoch.
_CONVERGED_RTOL = 1e-2
_CONVERGED_ATOL = 1e-4
#: Samples per forward pass when evaluating (no gradients kept, so larger than a training batch).
_EVAL_BATCH = 1024


@dataclass(frozen=True)
class TrainSettings:
    """Knobs of :func:`fit`.

    Attributes:
        optimizer: ``"sgd"`` (``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam``, default betas).
        lr: learning rate (finite, > 0).
        momentum: SGD momentum in [0, 1); must be 0 for Adam.
        weight_decay: L2 coefficient wd >= 0 added as wd * theta to the gradient (torch's convention).
        batch_size: minibatch size b >= 1 (per instance).
        max_epochs: most passes over the training set (>= 1).
        patience: epochs without validation improvement before an instance stops (>= val_every: an
            instance is only checked at validated epochs); ``None`` disables early stopping (the
            best-validation weights are still the ones kept). Ignored without a validation split.
        loss: ``"cross_entropy"`` (int64 class labels) or ``"mse"`` (float targets).
        val_every: epochs between validations (>= 1): the validation split is evaluated after epochs
            val_every, 2 val_every, ... and after ``max_epochs``; only these epochs can be the best
            epoch or a stopping epoch. Ignored without a validation split.
    """

    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 50
    patience: int | None = 5
    loss: LossKind = "cross_entropy"
    val_every: int = 1

    def __post_init__(self) -> None:
        check_choice(self.optimizer, "optimizer", ("sgd", "adam"))
        check_choice(self.loss, "loss", _LOSSES)
        check_real(self.lr, "lr", low=0.0, low_open=True)
        check_real(self.momentum, "momentum", low=0.0, high=1.0, high_open=True)
        if self.optimizer == "adam" and self.momentum != 0:
            raise ConfigError("momentum applies to optimizer='sgd' only (Adam's betas are fixed at torch's defaults)")
        check_real(self.weight_decay, "weight_decay", low=0.0)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.max_epochs, "max_epochs", low=1)
        check_int(self.val_every, "val_every", low=1)
        check_int(self.patience, "patience", low=self.val_every, optional=True,
                  note="an instance stops only at a validated epoch, every val_every epochs")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` recorded, per instance (shape (I,) each).

    Attributes:
        converged: bool. With validation and ``patience``: stopped by patience (the validation loss
            stopped improving, possibly without ever beating the initial weights: see ``improved``);
            an instance still improving at ``max_epochs`` is not converged. Otherwise: the mean
            training loss changed by at most 1 % + 1e-4 over the last epoch (``_CONVERGED_RTOL``,
            ``_CONVERGED_ATOL``); always False after a single epoch.
        improved: bool. With validation: ``best_epoch > 0``, some epoch's weights beat the initial
            weights on the validation split (False: the kept weights are the initial ones, the
            instance learned nothing the validation split rewards; flag it). Without validation:
            True (nothing to compare with).
        stop_epoch: int64, the last epoch the instance trained (1..max_epochs).
        best_epoch: int64, the epoch of the kept weights: the best validation epoch (0 = the initial
            weights were never beaten), or ``stop_epoch`` without validation (the final weights).
        best_val_loss: float64, the validation loss of the kept weights; +inf without validation.
        train_loss: float64, mean training loss over the instance's last epoch (each sample once,
            measured on the minibatch it was in, before that minibatch's update).
        steps: optimizer steps taken (shared by all instances: ceil(n / batch_size) per epoch run).
    """

    converged: torch.Tensor
    improved: torch.Tensor
    stop_epoch: torch.Tensor
    best_epoch: torch.Tensor
    best_val_loss: torch.Tensor
    train_loss: torch.Tensor
    steps: int


@dataclass(frozen=True)
class _Split:
    """One data split, checked and cast: x (n, *s) if ``shared_x`` else (I, n, *s); y likewise with
    trailing shape () for class labels and (out,) for MSE targets."""

    x: torch.Tensor
    y: torch.Tensor
    shared_x: bool
    shared_y: bool
    instances: int

    @property
    def n(self) -> int:
        return self.x.shape[0 if self.shared_x else 1]

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` (I, b) of every instance: x (I, b, *s), y (I, b, ...)."""
        rows = torch.arange(self.instances, device=idx.device)[:, None]
        x = self.x[idx] if self.shared_x else self.x[rows, idx]
        y = self.y[idx] if self.shared_y else self.y[rows, idx]
        return x, y

    def slice(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples start..stop-1 of every instance (views): x (I, b, *s), y (I, b, ...)."""
        I = self.instances
        x = self.x[start:stop].expand(I, *self.x[start:stop].shape) if self.shared_x else self.x[:, start:stop]
        y = self.y[start:stop].expand(I, *self.y[start:stop].shape) if self.shared_y else self.y[:, start:stop]
        return x, y


def _check_start_block(net: BlockNet, start_block: int) -> int:
    if not isinstance(net, BlockNet):
        raise ConfigError(f"net must be a transferlab BlockNet, got {type(net).__name__}")
    return check_int(start_block, "start_block", low=0, high=net.n_blocks, note="the number of blocks")


def _split(net: BlockNet, x: object, y: object, loss: str, start_block: int, names: tuple[str, str]) -> _Split:
    """Check ``x``, ``y`` against the network (DataError naming the argument) and cast x to its dtype."""
    param = next(net.parameters())
    # one zero sample through the network, in eval mode (no batch-norm statistics move): the shapes of
    # block k's output and of the head's
    with torch.no_grad(), _mode(net, False):
        h = net.features(torch.zeros(1, *net.input_shape, dtype=param.dtype, device=param.device), start_block)
        out_features = net.forward_from(h, start_block).shape[-1]
    s, I = tuple(h.shape[2:]), net.instances
    xn, yn = names
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise DataError(f"{xn} must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == len(s) + 1 and tuple(x.shape[1:]) == s:
        shared_x, n = True, x.shape[0]
    elif x.ndim == len(s) + 2 and tuple(x.shape[2:]) == s and x.shape[0] == I:
        shared_x, n = False, x.shape[1]
    else:
        dims = ", ".join(map(str, s))
        raise DataError(f"{xn} must have shape (n, {dims}) or ({I}, n, {dims}) (the inputs of block "
                        f"{start_block + 1}), got {tuple(x.shape)}")
    if n < 1:
        raise DataError(f"{xn} has no samples (n = 0)")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{xn} contains non-finite values")
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{yn} must be a torch.Tensor, got {type(y).__name__}")
    if loss == "cross_entropy":
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DataError(f"{yn} must hold integer class labels for cross-entropy, got dtype {y.dtype}")
        if tuple(y.shape) not in ((n,), (I, n)):
            raise DataError(f"{yn} must have shape ({n},) or ({I}, {n}) (n from {xn}), got {tuple(y.shape)}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= out_features:
            raise DataError(f"{yn} labels must lie in 0..{out_features - 1} (the head has {out_features} outputs), "
                            f"got labels in {low}..{high}")
        shared_y, y = y.ndim == 1, y.to(device=param.device, dtype=torch.int64)
    else:
        if not y.is_floating_point():
            raise DataError(f"{yn} must hold float targets for MSE, got dtype {y.dtype}")
        shapes = {(n, out_features): True, (I, n, out_features): False}
        if out_features == 1:
            shapes |= {(n,): True, (I, n): False}
        if tuple(y.shape) not in shapes:
            raise DataError(f"{yn} must have one of the shapes {sorted(shapes, key=len)} (n from {xn}, "
                            f"{out_features} outputs), got {tuple(y.shape)}")
        shared_y = shapes[tuple(y.shape)]
        if y.ndim == (1 if shared_y else 2):
            y = y.unsqueeze(-1)
        if not bool(torch.isfinite(y).all()):
            raise DataError(f"{yn} contains non-finite values")
        y = y.to(device=param.device, dtype=param.dtype)
    x = x.detach().to(device=param.device, dtype=param.dtype)
    return _Split(x, y, shared_x, shared_y, I)


def _instance_losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample losses (I, b) of outputs (I, b, C) against labels (I, b) or targets (I, b, C)."""
    if loss == "cross_entropy":
        return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(out.shape[:2])
    return (out - y).pow(2).mean(-1)


@contextmanager
def _mode(net: BlockNet, training: bool) -> Iterator[None]:
    """``net.train(training)`` inside the block, the previous mode restored afterwards."""
    previous = net.training
    net.train(training)
    try:
        yield
    finally:
        net.train(previous)


def _sums(net: BlockNet, split: _Split, loss: str, start_block: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Per-instance float64 sums over the split of the loss and of correct predictions (eval mode)."""
    I = split.instances
    device = split.x.device
    loss_sum = torch.zeros(I, dtype=torch.float64, device=device)
    correct = torch.zeros(I, dtype=torch.float64, device=device)
    with torch.no_grad(), _mode(net, False):
        for start in range(0, split.n, batch_size):
            x, y = split.slice(start, start + batch_size)
            out = net.forward_from(x, start_block)
            loss_sum += _instance_losses(out, y, loss).double().sum(1)
            if loss == "cross_entropy":
                correct += (out.argmax(-1) == y).double().sum(1)
    return loss_sum, correct


def evaluate(
    net: BlockNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: LossKind = "cross_entropy",
    start_block: int = 0,
    batch_size: int = _EVAL_BATCH,
) -> dict[str, torch.Tensor]:
    """Per-instance mean loss and error of ``h -> net.forward_from(h, start_block)`` on (x, y).

    ``x``, ``y`` are shaped as in :func:`fit`. Returns float64 tensors of shape (I,):
    ``"loss"`` (1/n) sum_j l(f_i(x_ij), y_ij); for cross-entropy also ``"accuracy"`` (fraction of
    argmax predictions equal to the label) and ``"error"`` = 1 - accuracy; for MSE ``"error"`` = the
    mean squared error (= ``"loss"``). Evaluation runs in eval mode without gradients, ``batch_size``
    samples at a time.

    Raises:
        ConfigError: unknown loss, bad start_block or batch_size.
        DataError: shapes, dtypes or labels that do not fit the network.
    """
    if loss not in _LOSSES:
        raise ConfigError(f"loss must be one of {_LOSSES}, got {loss!r}")
    k = _check_start_block(net, start_block)
    check_int(batch_size, "batch_size", low=1)
    split = _split(net, x, y, loss, k, ("x", "y"))
    loss_sum, correct = _sums(net, split, loss, k, batch_size)
    mean = loss_sum / split.n
    if loss == "mse":
        return {"loss": mean, "error": mean.clone()}
    accuracy = correct / split.n
    return {"loss": mean, "accuracy": accuracy, "error": 1 - accuracy}


def _trainable(net: BlockNet, start_block: int) -> list[torch.nn.Parameter]:
    """Parameters of blocks start_block+1..L and the head that require gradients (each (I, ...))."""
    modules = [*net.blocks[start_block:], net.head]
    params = list({id(p): p for m in modules for p in m.parameters() if p.requires_grad}.values())
    if not params:
        raise ConfigError(f"no trainable parameters after block {start_block}: every one is frozen")
    for p in params:
        if p.ndim == 0 or p.shape[0] != net.instances:
            raise ConfigError(f"every trainable parameter needs a leading instances axis of {net.instances}, "
                              f"got shape {tuple(p.shape)}")
    return params


def _generator_groups(generator: object, I: int) -> list[tuple[torch.Generator, int]]:
    """``generator`` as (generator, instances) groups covering the I instances (one group if it is a
    single generator); ConfigError for anything else or counts that do not add up to I."""
    if isinstance(generator, torch.Generator):
        return [(generator, I)]
    if isinstance(generator, (str, bytes)) or not isinstance(generator, Sequence) or not generator:
        raise ConfigError(f"generator must be a torch.Generator or a non-empty sequence of (torch.Generator, "
                          f"instances) pairs, got {type(generator).__name__}")
    groups = []
    for i, group in enumerate(generator):
        if not (isinstance(group, tuple) and len(group) == 2 and isinstance(group[0], torch.Generator)):
            raise ConfigError(f"generator[{i}] must be a pair (torch.Generator, instances), got {group!r}")
        groups.append((group[0], check_int(group[1], f"generator[{i}] instances", low=1)))
    total = sum(m for _, m in groups)
    if total != I:
        raise ConfigError(f"the generator groups cover {total} instances but the network has {I}")
    return groups


def _held_slices(net: BlockNet, start_block: int, frozen_blocks: Sequence[int] | None
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(parameter, instance rows, their initial values) for every trainable parameter of a block that
    some instances keep frozen (``frozen_blocks``, see :func:`fit`)."""
    if frozen_blocks is None:
        return []
    if isinstance(frozen_blocks, (str, bytes)) or not isinstance(frozen_blocks, Sequence):
        raise ConfigError(f"frozen_blocks must be a sequence of {net.instances} ints, "
                          f"got {type(frozen_blocks).__name__}")
    if len(frozen_blocks) != net.instances:
        raise ConfigError(f"frozen_blocks must have one entry per instance ({net.instances}), got {len(frozen_blocks)}")
    ks = [check_int(k, f"frozen_blocks[{i}]", low=start_block, high=net.n_blocks,
                    note=f"start_block = {start_block} to the {net.n_blocks} blocks")
          for i, k in enumerate(frozen_blocks)]
    held = []
    for b in range(start_block + 1, max(ks) + 1):
        rows = [i for i, k in enumerate(ks) if k >= b]
        for p in net.blocks[b - 1].parameters():
            if p.requires_grad:
                index = torch.tensor(rows, device=p.device)
                held.append((p, index, p.detach()[index].clone()))
    return held


def _sliceable(module: nn.Module) -> bool:
    """Whether ``module`` runs on the first c instances when its parameters are sliced to [:c]: every
    submodule is a BatchedLinear or holds no state (parameters, buffers, an ``instances`` count)."""
    return all(isinstance(m, BatchedLinear) or (not any(True for _ in m.parameters(recurse=False))
                                                 and not any(True for _ in m.buffers(recurse=False))
                                                 and not hasattr(m, "instances"))
               for m in module.modules())


def _stages(net: BlockNet, data: _Split, start_block: int, frozen_blocks: Sequence[int]
            ) -> dict[int, tuple[int, _Split]] | None:
    """For the staged forward (module docstring): {j: (c_{j+1}, inputs)} per depth j >= start_block at
    which some instances start, with c_{j+1} the instances starting at depth <= j and ``inputs`` the
    features after block j of instances c_j..c_{j+1}-1 (a :class:`_Split`, the labels unused); None
    when the staged forward does not apply (depths not non-decreasing, or blocks it cannot slice)."""
    ks = [int(k) for k in frozen_blocks]
    if any(a > b for a, b in zip(ks, ks[1:])) or not all(_sliceable(b) for b in net.blocks[start_block:]):
        return None
    stages: dict[int, tuple[int, _Split]] = {}
    base = 0  # h holds the features of instances base..I-1, the ones that start at depth j or deeper
    h = data.x.unsqueeze(0).expand(data.instances, *data.x.shape) if data.shared_x else data.x
    with torch.no_grad(), _mode(net, False):
        for j in range(start_block, max(ks) + 1):
            if j > start_block:  # block j on the instances still frozen there, once, in chunks
                block = net.blocks[j - 1]
                params = {n: p[base:] for n, p in block.named_parameters()}
                h = torch.cat([functional_call(block, (params, {}), (h[:, s : s + _EVAL_BATCH],))
                               for s in range(0, h.shape[1], _EVAL_BATCH)], 1)
            count = ks.count(j)
            if count:
                if j == start_block:  # the inputs as given
                    x, shared = (data.x, True) if data.shared_x else (data.x[:count], False)
                else:
                    x, shared = h[:count].clone(), False  # a copy: h's storage is freed at the next block
                stages[j] = (base + count, _Split(x, data.y, shared, data.shared_y, count))
                h, base = h[count:], base + count
    return stages


def _staged_forward(net: BlockNet, start_block: int, stages: dict[int, tuple[int, _Split]], idx: torch.Tensor
                    ) -> torch.Tensor:
    """The training forward of the staged path: (I, b, out_features) for minibatch indices ``idx`` (I, b)."""
    h: torch.Tensor | None = None
    lo = 0
    for j in range(start_block, net.n_blocks + 1):
        if j in stages:
            hi, split = stages[j]
            x = split.x[idx[lo:hi]] if split.shared_x else split.x[torch.arange(hi - lo, device=idx.device)[:, None],
                                                                    idx[lo:hi]]
            h = x if h is None else torch.cat([h, x])
            lo = hi
        if h is None or j == net.n_blocks:
            continue
        block = net.blocks[j]
        if h.shape[0] == net.instances:
            h = block(h)
        else:
            c = h.shape[0]
            h = functional_call(block, ({n: p[:c] for n, p in block.named_parameters()}, {}), (h,))
    assert h is not None and h.shape[0] == net.instances
    return net.head(h)


def _diverged(bad: torch.Tensor, epoch: int, worst: torch.Tensor, initial: torch.Tensor, lr: float) -> TrainingDiverged:
    idx = bad.nonzero().flatten().tolist()
    detail = ", ".join(f"{i} (loss {float(worst[i]):.3g}, initial {float(initial[i]):.3g})" for i in idx[:5])
    return TrainingDiverged(
        f"training diverged at epoch {epoch} in instance(s) {detail}{' ...' if len(idx) > 5 else ''}: the loss "
        f"became non-finite or exceeded {_DIVERGENCE_FACTOR:.0e} x (1 + initial loss); the learning rate "
        f"(lr = {lr:g}) is likely too large for this network, or its initial weights are too large"
    )


def fit(
    net: BlockNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    settings: TrainSettings,
    generator: torch.Generator | Sequence[tuple[torch.Generator, int]],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    start_block: int = 0,
    frozen_blocks: Sequence[int] | None = None,
) -> TrainResult:
    """Train every instance of ``net`` (in place) by minibatch SGD/Adam; see the module docstring.

    Args:
        net: the I networks; trained: the parameters of blocks start_block+1..L and the head that
            require gradients. On return they hold each instance's kept (best-validation) weights.
        x: inputs of block start_block+1, (n, *s_k) shared by all instances or (I, n, *s_k) one set per
            instance (s_0 = ``net.input_shape``); cast to the network's dtype and device.
        y: int64 labels in 0..C-1, (n,) or (I, n), for cross-entropy; float targets (n, C) or (I, n, C)
            for MSE, where C = out_features ((n,) and (I, n) also accepted when C = 1).
        settings: optimizer, batch size, epochs, patience, loss, validation interval.
        generator: the source of every minibatch permutation, or a sequence of (generator, instances)
            groups covering the I instances in order (see the reproducibility contract).
        val: optional validation split (x_val, y_val), shaped like (x, y) (its own n).
        start_block: k; the model trained is h -> net.forward_from(h, k).
        frozen_blocks: optional per-instance k_i in start_block..L (length I): blocks 1..k_i of
            instance i keep their initial weights (see the module docstring).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: bad settings/start_block, or nothing to train.
        DataError: x, y or val with wrong shapes, dtypes, non-finite values or labels out of range.
        TrainingDiverged: a still-active instance's loss became non-finite or exceeded
            1e4 (1 + its initial loss).
    """
    if not isinstance(settings, TrainSettings):
        raise ConfigError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    k, loss, I = _check_start_block(net, start_block), settings.loss, net.instances
    groups = _generator_groups(generator, I)
    data = _split(net, x, y, loss, k, ("x", "y"))
    val_data = None
    if val is not None:
        if not (isinstance(val, tuple) and len(val) == 2):
            raise DataError("val must be a tuple (x_val, y_val)")
        val_data = _split(net, val[0], val[1], loss, k, ("val[0]", "val[1]"))
    params = _trainable(net, k)
    held = _held_slices(net, k, frozen_blocks)
    staged = _stages(net, data, k, frozen_blocks) if held else None
    # torch's fused kernels (CPU and CUDA) apply the same elementwise update in one pass per parameter
    # instead of ~10: with I instances stacked the optimizer step is a large share of a step's time
    fused = True if all(p.device.type in ("cpu", "cuda") for p in params) else None
    if settings.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay, fused=fused)
    else:
        optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)

    device, n, B = data.x.device, data.n, settings.batch_size
    f64 = {"dtype": torch.float64, "device": device}
    best_epoch = torch.zeros(I, dtype=torch.int64, device=device)
    stop_epoch = torch.zeros(I, dtype=torch.int64, device=device)
    early = torch.zeros(I, dtype=torch.bool, device=device)  # stopped by patience
    active = torch.ones(I, dtype=torch.bool, device=device)
    train_loss = torch.full((I,), math.nan, **f64)  # T_i(e), mean training loss of epoch e
    previous_loss = train_loss  # T_i(e - 1) (NaN until two epochs ran)
    best_val = torch.full((I,), math.inf, **f64)
    snapshot: list[torch.Tensor] = []
    if val_data is not None:
        best_val = _sums(net, val_data, loss, k, _EVAL_BATCH)[0] / val_data.n
        if not bool(torch.isfinite(best_val).all()):
            raise TrainingDiverged(
                f"the validation loss of the initial weights is not finite in instance(s) "
                f"{(~torch.isfinite(best_val)).nonzero().flatten().tolist()}: the initial weights or the "
                f"inputs are too large")
        snapshot = [p.detach().clone() for p in params]
    initial = torch.full((I,), math.nan, **f64)  # L_i(0), the loss of the first minibatch
    steps = 0
    with _mode(net, True):
        for epoch in range(1, settings.max_epochs + 1):
            perm = torch.stack([torch.randperm(n, generator=g, device=g.device) for g, m in groups for _ in range(m)])
            perm = perm.to(device)
            total = torch.zeros(I, **f64)
            worst = torch.zeros(I, **f64)
            for start in range(0, n, B):
                idx = perm[:, start : start + B]
                xb, yb = data.gather(idx)
                out = net.forward_from(xb, k) if staged is None else _staged_forward(net, k, staged, idx)
                losses = _instance_losses(out, yb, loss).mean(1)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                if held:
                    with torch.no_grad():
                        for p, rows, kept in held:
                            p.index_copy_(0, rows, kept)
                steps += 1
                step_loss = losses.detach().double()
                if steps == 1:
                    initial = step_loss
                total += step_loss * idx.shape[1]
                worst = torch.maximum(worst, torch.nan_to_num(step_loss, nan=math.inf))
            bad = active & ~(worst <= _DIVERGENCE_FACTOR * (1 + initial))  # NaN initial counts as bad
            validated = val_data is not None and (epoch % settings.val_every == 0 or epoch == settings.max_epochs)
            if validated:
                val_loss = _sums(net, val_data, loss, k, _EVAL_BATCH)[0] / val_data.n
                bad |= active & ~torch.isfinite(val_loss)
            if bool(bad.any()):
                raise _diverged(bad, epoch, worst, initial, settings.lr)
            previous_loss = train_loss
            train_loss = torch.where(active, total / n, train_loss)
            stop_epoch = torch.where(active, epoch, stop_epoch)
            if validated:
                better = active & (val_loss < best_val)
                best_val = torch.where(better, val_loss, best_val)
                best_epoch = torch.where(better, epoch, best_epoch)
                for kept, p in zip(snapshot, params, strict=True):
                    kept[better] = p.detach()[better]
                if settings.patience is not None:
                    stopping = active & (epoch - best_epoch >= settings.patience)
                    early |= stopping
                    active &= ~stopping
            if not bool(active.any()):
                break
    if val_data is not None:
        with torch.no_grad():
            for kept, p in zip(snapshot, params, strict=True):
                p.copy_(kept)
        improved = best_epoch > 0
    else:
        best_epoch = stop_epoch.clone()
        improved = torch.ones(I, dtype=torch.bool, device=device)
    if val_data is not None and settings.patience is not None:
        converged = early
    else:
        converged = (train_loss - previous_loss).abs() <= _CONVERGED_RTOL * previous_loss + _CONVERGED_ATOL
    return TrainResult(converged=converged, improved=improved, stop_epoch=stop_epoch, best_epoch=best_epoch,
                       best_val_loss=best_val, train_loss=train_loss, steps=steps)
