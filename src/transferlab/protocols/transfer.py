"""Model-agnostic transfer protocols on any :class:`~transferlab.nets.blocks.BlockNet`.

A source network with L blocks (trained once, shared by many cells, never mutated: every protocol
works on a deep copy) is transferred to a target task. The target head is always new -- a fresh linear
map from the flattened features after block L to the target's outputs (the target's classes differ
from the source's), a :class:`BatchedLinear` drawn from the protocol's generator.

==========================  =====================================================================
protocol                    what trains
==========================  =====================================================================
:func:`scratch`             every block redrawn from the generator, all trained (k = 0)
:func:`finetune`            all blocks from the source weights, all trained (k = 0)
:func:`freeze_first_k`      blocks 1..k frozen at the source; k+1..L kept at the source or redrawn
                            (``reinit_unfrozen``); they and the head train. k = L: only the head.
:func:`linear_probe_transfer`  the head alone, by the convex probe (:func:`linear_probe`) on the
                            frozen features after block L: no SGD
:func:`incremental_defrost` k = L, L-1, ..., 0 in turn, each stage continuing from the previous
                            stage's weights (the head too), one more block unfrozen from the top
:func:`lp_ft`               the probe's head, then everything fine-tuned from it (Kumar et al. 2022)
==========================  =====================================================================

Frozen-prefix caching: with blocks 1..k frozen, the features h = f_k(x) after block k are computed
once per split (no gradients, eval mode, in chunks) and the trainer trains h -> net.forward_from(h, k)
(``fit(..., start_block=k)``). This is exact -- the same trained weights as recomputing the frozen
prefix at every step -- because the prefix is a fixed deterministic function during training (true of
every transferlab block: no dropout, no batch-statistics BatchNorm; the module adapter runs eval mode).

Generator use (the seeding contract): a protocol draws, in order, the redrawn blocks k+1..L (only when
re-initialising), then the new head, then hands the generator to the trainer (minibatch order).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import torch

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError
from transferlab.nets.blocks import BatchedLinear, BlockNet, reset_module
from transferlab.protocols._probe import LinearProbe, linear_probe
from transferlab.train.loop import TrainResult, TrainSettings, evaluate, fit

__all__ = [
    "TargetData",
    "TransferResult",
    "finetune",
    "freeze_first_k",
    "incremental_defrost",
    "linear_probe_transfer",
    "lp_ft",
    "scratch",
    "transfer_net",
]

#: Samples per forward pass when caching the frozen prefix's features.
_FEATURE_CHUNK = 256


class _FlatLinearHead(BatchedLinear):
    """The target head: (I, n, *s_L) -> flatten -> (I, n, prod(s_L)) -> x W_i + b_i -> (I, n, c)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(2))


@dataclasses.dataclass(frozen=True)
class TargetData:
    """The target task: train, optional validation (early stopping), and test splits.

    Inputs x are (n, *input_shape) shared by every instance or (I, n, *input_shape) one set per
    instance. Targets: classification (``n_classes`` given) integer labels (n,) or (I, n) in
    0..n_classes-1, trained with cross-entropy; regression (``n_classes=None``) float targets (n,), (n, c)
    or (I, n, c), trained with MSE. Label range and dtypes are checked here; shapes against the
    network when a protocol runs.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    n_classes: int | None = None

    def __post_init__(self) -> None:
        if (self.x_val is None) != (self.y_val is None):
            raise ConfigError("give both x_val and y_val, or neither")
        if self.n_classes is not None:
            check_int(self.n_classes, "n_classes", low=2)
        for name, x, y in self.splits():
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise DataError(f"x_{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
            if not isinstance(y, torch.Tensor):
                raise DataError(f"y_{name} must be a torch.Tensor, got {type(y).__name__}")
            if self.n_classes is None:
                if not y.is_floating_point():
                    raise DataError(f"y_{name} must hold float regression targets (n_classes=None), got {y.dtype}")
                continue
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise DataError(f"y_{name} must hold integer class labels, got {y.dtype}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
                raise DataError(f"y_{name} labels must lie in 0..{self.n_classes - 1} (n_classes = "
                                f"{self.n_classes}), got labels in {int(y.min())}..{int(y.max())}")

    def splits(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, x, y) for train, val (when given), test."""
        out = [("train", self.x_train, self.y_train)]
        if self.x_val is not None and self.y_val is not None:
            out.append(("val", self.x_val, self.y_val))
        return [*out, ("test", self.x_test, self.y_test)]

    @property
    def loss(self) -> str:
        """``"cross_entropy"`` for classification, ``"mse"`` for regression."""
        return "mse" if self.n_classes is None else "cross_entropy"

    @property
    def out_features(self) -> int:
        """Outputs of the target head: n_classes, or the regression targets' width c."""
        if self.n_classes is not None:
            return self.n_classes
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[-1])


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """One protocol's outcome, per instance.

    Attributes:
        protocol: ``"scratch"``, ``"finetune"``, ``"freeze_first_k"``, ``"linear_probe"``,
            ``"incremental_defrost"`` or ``"lp_ft"``.
        k: blocks frozen while training (0 = all trained, L = only the head).
        reinit: whether the unfrozen blocks were redrawn instead of kept at the source weights.
        test_loss: (I,) float64 mean test loss (cross-entropy or MSE).
        test_error: (I,) float64: 1 - accuracy (classification) or the MSE (regression).
        test_accuracy: (I,) float64 for classification, None for regression.
        converged: (I,) bool: the trainer's verdict (:class:`TrainResult`), or the probe's
            gradient-norm test for :func:`linear_probe_transfer`.
        stop_epoch: (I,) int64 last trained epoch; None for the probe (no epochs).
        training: the trainer's full record; None for the probe.
        probe: the fitted probe (:func:`linear_probe_transfer`, :func:`lp_ft`), else None.
        net: the trained network; None for intermediate :func:`incremental_defrost` stages.
    """

    protocol: str
    k: int
    reinit: bool
    test_loss: torch.Tensor
    test_error: torch.Tensor
    test_accuracy: torch.Tensor | None
    converged: torch.Tensor
    stop_epoch: torch.Tensor | None
    training: TrainResult | None
    probe: LinearProbe | None
    net: BlockNet | None


def _param(net: BlockNet) -> torch.Tensor:
    """A floating-point parameter of ``net`` (its dtype and device are the network's)."""
    for p in net.parameters():
        if p.is_floating_point():
            return p
    raise ConfigError("the network has no floating-point parameters")


def _check(net: BlockNet, data: TargetData, settings: TrainSettings | None) -> None:
    """The network, the data's shapes against it, and the settings' loss against the task."""
    if not isinstance(net, BlockNet):
        raise ConfigError(f"the network must be a transferlab BlockNet, got {type(net).__name__}")
    if not isinstance(data, TargetData):
        raise ConfigError(f"data must be a TargetData, got {type(data).__name__}")
    if settings is not None:
        if not isinstance(settings, TrainSettings):
            raise ConfigError(f"settings must be a TrainSettings, got {type(settings).__name__}")
        if settings.loss != data.loss:
            raise ConfigError(f"settings.loss is {settings.loss!r} but the target task needs {data.loss!r} "
                              f"({'regression' if data.n_classes is None else 'classification'})")
    s, I = net.input_shape, net.instances
    for name, x, y in data.splits():
        try:
            n = net.batch_input(x).shape[1]
        except DataError as err:
            raise DataError(f"x_{name}: {err}") from err
        if n < 1:
            raise DataError(f"x_{name} has no samples")
        if data.n_classes is not None:
            shapes: list[tuple[int, ...]] = [(n,), (I, n)]
        else:
            c = data.out_features
            shapes = [(n, c), (I, n, c)] + ([(n,)] if c == 1 else [])
        if tuple(y.shape) not in shapes:
            raise DataError(f"y_{name} must have one of the shapes {shapes} (x_{name} has n = {n} samples of shape "
                            f"{s}), got {tuple(y.shape)}")


def _check_k(net: BlockNet, k: object) -> int:
    return check_int(k, "k", low=0, high=net.n_blocks, note=f"the network has {net.n_blocks} blocks")


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _features(net: BlockNet, x: torch.Tensor, k: int) -> torch.Tensor:
    """f_k(x), (I, n, *s_k), without gradients in eval mode, ``_FEATURE_CHUNK`` samples at a time
    (k = 0: the input broadcast to the instances, no copy), in the network's dtype and device."""
    p = _param(net)
    h = net.batch_input(x.to(device=p.device, dtype=p.dtype))
    if k == 0:
        return h
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            chunks = [net.features(h[:, i : i + _FEATURE_CHUNK], k) for i in range(0, h.shape[1], _FEATURE_CHUNK)]
    finally:
        net.train(was_training)
    return torch.cat(chunks, 1)


def transfer_net(source: BlockNet, k: int, out_features: int, *, reinit_unfrozen: bool,
                 generator: torch.Generator) -> BlockNet:
    """A deep copy of ``source`` ready for transfer with blocks 1..k frozen.

    Blocks k+1..L keep the source weights or, with ``reinit_unfrozen``, are redrawn from ``generator``
    (``reset_module``, blocks in order); then the head is replaced by a fresh linear head
    (I, n, *s_L) -> (I, n, out_features) on the flattened features, drawn from ``generator``
    (:class:`BatchedLinear`'s init, uniform on +-1/sqrt(prod s_L)). Finally ``freeze_first(k)``.
    """
    if not isinstance(source, BlockNet):
        raise ConfigError(f"the source must be a transferlab BlockNet, got {type(source).__name__}")
    k = _check_k(source, k)
    check_int(out_features, "out_features", low=1)
    _check_generator(generator)
    net = copy.deepcopy(source)
    if reinit_unfrozen:
        for block in net.blocks[k:]:
            reset_module(block, generator)
    p = _param(net)
    probe = _features(net, torch.zeros(1, *net.input_shape, dtype=p.dtype, device=p.device), net.n_blocks)
    d = math.prod(probe.shape[2:])
    net.head = _FlatLinearHead(net.instances, d, out_features, generator=generator, dtype=p.dtype).to(p.device)
    net.freeze_first(k)
    return net


def _train(net: BlockNet, k: int, data: TargetData, settings: TrainSettings, generator: torch.Generator,
           protocol: str, reinit: bool, keep_net: bool = True) -> TransferResult:
    """Freeze blocks 1..k of ``net``, train the rest on cached features, evaluate on the test split."""
    net.freeze_first(k)
    val = None
    if data.x_val is not None and data.y_val is not None:
        val = (_features(net, data.x_val, k), data.y_val)
    record = fit(net, _features(net, data.x_train, k), data.y_train, settings=settings, generator=generator,
                 val=val, start_block=k)
    metrics = evaluate(net, _features(net, data.x_test, k), data.y_test, loss=data.loss, start_block=k)
    return TransferResult(protocol=protocol, k=k, reinit=reinit, test_loss=metrics["loss"],
                          test_error=metrics["error"], test_accuracy=metrics.get("accuracy"),
                          converged=record.converged, stop_epoch=record.stop_epoch, training=record, probe=None,
                          net=net if keep_net else None)


def freeze_first_k(source: BlockNet, k: int, data: TargetData, *, reinit_unfrozen: bool = False,
                   settings: TrainSettings, generator: torch.Generator) -> TransferResult:
    """Transfer with blocks 1..k frozen at the source weights (k in 0..L; k = L trains only the head).

    Blocks k+1..L start from the source weights or, with ``reinit_unfrozen``, from fresh draws
    (:func:`transfer_net`); they and the new head train on the target by :func:`fit` on the cached
    features after block k. ``source`` is not modified.
    """
    _check(source, data, settings)
    net = transfer_net(source, k, data.out_features, reinit_unfrozen=reinit_unfrozen, generator=generator)
    return _train(net, k, data, settings, generator, "freeze_first_k", reinit_unfrozen)


def scratch(init: BlockNet, data: TargetData, *, settings: TrainSettings, generator: torch.Generator
            ) -> TransferResult:
    """Train from scratch: every block of a copy of ``init`` (only its architecture matters) is redrawn
    from ``generator``, the new head likewise, and everything trains (= ``freeze_first_k(init, 0,
    reinit_unfrozen=True)``)."""
    _check(init, data, settings)
    net = transfer_net(init, 0, data.out_features, reinit_unfrozen=True, generator=generator)
    return _train(net, 0, data, settings, generator, "scratch", True)


def finetune(source: BlockNet, data: TargetData, *, settings: TrainSettings, generator: torch.Generator
             ) -> TransferResult:
    """Fine-tune every block from the source weights with a new head (= ``freeze_first_k(source, 0)``)."""
    _check(source, data, settings)
    net = transfer_net(source, 0, data.out_features, reinit_unfrozen=False, generator=generator)
    return _train(net, 0, data, settings, generator, "finetune", False)


def _probe(source: BlockNet, data: TargetData, l2: float, tol: float, max_iter: int
           ) -> tuple[BlockNet, LinearProbe]:
    """A copy of ``source`` whose new head holds the probe fitted on the flattened features after block L."""
    L = source.n_blocks
    # The head's initial draw is overwritten by the probe; a local generator keeps the global RNG untouched.
    net = transfer_net(source, L, data.out_features, reinit_unfrozen=False, generator=torch.Generator().manual_seed(0))
    features = _features(net, data.x_train, L).flatten(2)
    fitted = linear_probe(features, data.y_train, n_classes=data.n_classes, l2=l2, tol=tol, max_iter=max_iter)
    fitted.load_into(net)
    return net, fitted


def linear_probe_transfer(source: BlockNet, data: TargetData, *, l2: float, tol: float = 1e-7,
                          max_iter: int = 5000) -> TransferResult:
    """The convex linear probe on the source's frozen features after block L, as a network.

    Ridge (regression) or multinomial logistic regression (classification) with penalty ``l2`` (see
    :func:`linear_probe`; the validation split is not used), loaded into the new linear head of a copy
    of ``source``, evaluated on the test split. k = L; deterministic (no generator).
    """
    _check(source, data, None)
    net, fitted = _probe(source, data, l2, tol, max_iter)
    L = source.n_blocks
    metrics = evaluate(net, _features(net, data.x_test, L), data.y_test, loss=data.loss, start_block=L)
    return TransferResult(protocol="linear_probe", k=L, reinit=False, test_loss=metrics["loss"],
                          test_error=metrics["error"], test_accuracy=metrics.get("accuracy"),
                          converged=fitted.converged, stop_epoch=None, training=None, probe=fitted, net=net)


def lp_ft(source: BlockNet, data: TargetData, *, l2: float, settings: TrainSettings, generator: torch.Generator,
          tol: float = 1e-7, max_iter: int = 5000) -> TransferResult:
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
    Out-of-Distribution"): fit the linear probe as in :func:`linear_probe_transfer`, then fine-tune
    every block and the head starting from the probed head (k = 0). The result's ``probe`` is the
    probe it started from."""
    _check(source, data, settings)
    _check_generator(generator)
    net, fitted = _probe(source, data, l2, tol, max_iter)
    result = _train(net, 0, data, settings, generator, "lp_ft", False)
    return dataclasses.replace(result, probe=fitted)


def incremental_defrost(
    source: BlockNet,
    data: TargetData,
    *,
    settings: TrainSettings,
    generator: torch.Generator,
    on_stage: Callable[[TransferResult, BlockNet], None] | None = None,
) -> list[TransferResult]:
    """Unfreeze one block at a time from the top: stages k = L, L-1, ..., 0.

    Stage k = L trains the new head on the frozen source features; each later stage k unfreezes block
    k + 1 and trains blocks k+1..L and the head by :func:`fit` starting from the previous stage's
    weights (not from the source), with a fresh training run (new optimizer state, its own early
    stopping), and is evaluated on the test split.

    Args:
        on_stage: called after every stage with its result and the network at that point (e.g. to
            measure representations); the network keeps training afterwards, so copy what you keep.

    Returns:
        L + 1 results in stage order (k = L first); only the last one (k = 0) holds the network.
    """
    _check(source, data, settings)
    L = source.n_blocks
    net = transfer_net(source, L, data.out_features, reinit_unfrozen=False, generator=generator)
    results = []
    for k in range(L, -1, -1):
        result = _train(net, k, data, settings, generator, "incremental_defrost", False, keep_net=k == 0)
        if on_stage is not None:
            on_stage(result, net)
        results.append(result)
    return results
