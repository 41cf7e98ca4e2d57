"""``transfer``: transfer from a real source network to a real target task, for every protocol and depth.

One cell is one (source, target, n, protocol, k) with ``instances`` seeds trained as one batched program.
Each instance draws its own class-balanced target training subset of ``n`` images (and a disjoint
validation subset of ``val_size`` images, used only for early stopping) from the target's training
split; every instance and every cell is evaluated on the same class-balanced subset of ``test_size``
images of the target's test split (drawn with a fixed seed, so cells are compared on equal footing).
Instance i of replicate r draws the same subsets in every protocol and k (they are seeded by the spec
seed, r, i and the target fields only), so the curves over k are paired comparisons. The validation
images are extra labelled data (a practitioner's held-out set); ``val_size = 0`` trains for the fixed
step budget instead.

Sources (``source``):

- ``"pretrained:mobilenet_v2"``, ``"pretrained:efficientnet_lite0"``: ImageNet networks
  (:func:`transferlab.nets.pretrained.load_pretrained`) whose stages are the blocks;
- ``"trained:<data set>"``: a network of ``architecture`` (``"cnn"``: :func:`~transferlab.nets.cnn.small_cnn`,
  ``"mlp"``: :func:`~transferlab.nets.mlp.mlp`) that transferlab trains on ``source_size`` images of that
  data set, once: it is cached on disk by the hash of its configuration (:func:`source_cache_dir`), which
  includes its label function, as a weights-only ``state_dict`` and reused by every cell. ``source_labels``
  is a label function of :mod:`transferlab.tasks.relabel`: ``fine``, ``coarse``, ``coarse:G``,
  ``random:K``, ``kmeans:K`` or ``kmeans-aligned:K[:G]``, checked against the data set's hierarchy when the
  spec loads. Fine and coarse sources draw ``source_size`` images class-balanced in their own labels;
  every other label function relabels the fine source's images (same draw, same initial weights), so
  those sources differ only in their labels (k-means on 50 principal components of those images);
- ``"module:<package.module>:<function>"``: a user's network; the function, called without arguments,
  returns ``(module, blocks, head)`` as :func:`transferlab.nets.from_module` takes them.

Targets (``target``): a data set name of :func:`transferlab.tasks.load_dataset`, possibly a class subset
such as ``"fashion_mnist[5,6,7,8,9]"`` (with ``target_labels`` fine, coarse or ``coarse:G``, a named
grouping such as ``mnist_fashion_animal``'s ``halves``), or ``"npz:<path>"``: a
``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (images ``(n, *input_shape)`` float,
labels ``(n,)`` integers ``0..C-1``).

Protocols (:mod:`transferlab.protocols.transfer`): ``scratch`` (the source's architecture at random
init), ``linear_probe`` (convex probe on the frozen features after block L, penalty ``l2``),
``finetune``, ``freeze`` (blocks 1..k frozen; ``reinit_unfrozen`` redraws blocks k+1..L), ``defrost``
(incremental defrosting, stages k = L..0) and ``lp_ft``.

Rows: ``test_error`` (mean over instances) and ``test_error_instances``, ``test_loss``, ``k`` (blocks
frozen; L for the probe, 0 for scratch / finetune / LP-FT / the last defrost stage), ``n_blocks`` (L),
``converged`` (every instance stopped by early stopping after improving on its initial weights, or the probe
met its gradient tolerance) with ``unconverged`` (how many runs did not) and ``stop_epoch_instances``; ``source_test_accuracy`` for trained
sources; ``stage_k`` and ``stage_error`` for defrosting; ``source_classes`` (K) for trained sources.

Easy and hard test samples (``hard_fraction`` = q > 0): a reference classifier independent of every source --
multinomial logistic regression on the first 50 principal components of the pixels, fitted on the target's
whole training split (:func:`reference_margins`, cached on disk) -- gives each test image its margin
m = z_y - max_{c != y} z_c; within each class of the shared test subset the ceil(q n_c) images of lowest
margin are *hard* (:func:`hard_mask`), the rest *easy*. Rows then add ``easy_error``, ``hard_error`` (and
their ``_instances``), ``hard_samples`` and ``reference_test_accuracy``. Several label functions of one
source data set are compared by :mod:`transferlab.experiments.transfer_labels` (accuracy against K).
:meth:`TransferExperiment.analyze` gives the
error against k for each n with standard errors over all instances and replicates, k*(n) (the best
number of frozen blocks), the transferability (scratch error minus the best transfer error) and the
defrosting curves; unconverged cells are counted and flagged, not dropped (their weights are the best
validation weights found).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from transferlab.errors import ConfigError, DataError
from transferlab.experiments._source_cache import digest as _digest
from transferlab.experiments._source_cache import load_or_train, source_cache_dir
from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable
from transferlab.experiments.transfer_labels import label_curves, label_figure
from transferlab.tasks.relabel import parse_label_function

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from transferlab.nets.blocks import BlockNet
    from transferlab.protocols.transfer import TargetData

__all__ = ["TargetTrainingConfig", "TransferConfig", "TransferExperiment", "build_source", "hard_mask", "pooled_error",
           "protocol_row", "reference_margins", "run_fields", "source_cache_dir"]

Protocol = Literal["scratch", "linear_probe", "finetune", "freeze", "defrost", "lp_ft"]
#: The seed of the shared test subset (every cell sees the same test images).
_TEST_SEED = 20240101


class TargetTrainingConfig(ExperimentConfig):
    """Fields shared by the kinds that run :func:`protocol_row` (``transfer``, ``defrost``): the frozen depth,
    target training and probe settings, and the source's learning rate. A subclass defines ``protocol``."""

    k: int | None = Field(None, ge=0, description="blocks frozen (protocol 'freeze' only)")
    reinit_unfrozen: bool = Field(False, description="freeze: redraw blocks k+1..L instead of keeping the source's")
    val_size: int = Field(200, ge=0, description="validation samples per instance for early stopping (0: none)")
    source_lr: float = Field(1e-3, gt=0, description="Adam learning rate of source training (batch 128)")
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    max_steps: int = Field(1000, ge=1, description="optimizer steps budget per training run (whole epochs)")
    patience_steps: int = Field(100, ge=1, description="stop after about this many steps without validation gain")
    l2: float = Field(1e-3, gt=0, description="penalty of the linear probe (linear_probe, lp_ft)")

    @model_validator(mode="after")
    def _freeze_fields(self) -> TargetTrainingConfig:
        protocol = getattr(self, "protocol")
        if protocol == "freeze" and self.k is None:
            raise ValueError("protocol 'freeze' needs k (the number of frozen blocks)")
        if protocol != "freeze" and self.k is not None:
            raise ValueError(f"k applies to protocol 'freeze' only, not {protocol!r}")
        if protocol != "freeze" and self.reinit_unfrozen:
            raise ValueError("reinit_unfrozen applies to protocol 'freeze' only")
        return self


class TransferConfig(TargetTrainingConfig):
    """One cell of the ``transfer`` experiment (see the module docstring)."""

    source: str = Field(description="pretrained:<name> | trained:<data set> | module:<pkg.mod>:<function>")
    target: str = Field("fashion_mnist", description="data set name (a class subset: name[i,j,...]) or npz:<path>")
    target_labels: str = Field("fine", description="fine | coarse | coarse:<grouping> (the target's label function)")
    n: int = Field(ge=2, description="target training images per instance (class-balanced)")
    protocol: Protocol = "freeze"
    instances: int = Field(3, ge=1, description="seeds trained together, each with its own target subset")
    test_size: int = Field(2000, ge=0, description="shared test images (0: the whole test split)")
    architecture: Literal["cnn", "mlp"] = Field("cnn", description="network of trained sources")
    source_labels: str = Field("fine", description="label function of a trained source: fine | coarse[:G] | random:K "
                                                   "| kmeans:K | kmeans-aligned:K[:G] (transferlab.tasks.relabel)")
    source_size: int = Field(10000, ge=10, description="training images of a trained source")
    source_epochs: int = Field(10, ge=1, description="most epochs of source training")
    hard_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of each test class called hard (lowest "
                                 "reference margin); 0: no easy / hard split")

    @model_validator(mode="after")
    def _known_source(self) -> TransferConfig:
        from transferlab.tasks.images import split_dataset_name

        kind, _, rest = self.source.partition(":")
        if kind not in ("pretrained", "trained", "module") or not rest:
            raise ValueError(f"source must be pretrained:<name>, trained:<data set> or module:<pkg.mod>:<function>, "
                             f"got {self.source!r}")
        # data set names (and class subsets, fashion_mnist[5,6,7]) are refused here, before any training
        names = {"source": rest if kind == "trained" else None,
                 "target": None if self.target.startswith("npz:") else self.target}
        for field, name in names.items():
            if name is not None:
                try:
                    split_dataset_name(name)
                except ConfigError as err:
                    raise ValueError(f"{field}: {err}") from None
        # label functions are checked against their data set's hierarchy here, before any data loads
        try:
            target_fn = parse_label_function(self.target_labels, names["target"])
            if target_fn.kind not in ("fine", "coarse"):
                raise ConfigError(f"target_labels must be fine, coarse or coarse:<grouping>, got {self.target_labels!r}")
            parse_label_function(self.source_labels, names["source"])
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if self.hard_fraction > 0 and self.target.startswith("npz:"):
            raise ValueError("hard_fraction needs a packaged target data set (its reference classifier is cached by name)")
        return self


class TransferExperiment(Experiment):
    name = "transfer"
    version = "1"
    Config = TransferConfig
    description = "Real source -> real target: scratch, probe, fine-tune, freeze-first-k, defrost, LP-FT."

    def batch_key(self, config: TransferConfig) -> Hashable:  # type: ignore[override]
        # a cell is already one batched program (its instances); cells run as separate tasks so that
        # workers share them out (each worker loads a trained source once, from the disk cache)
        return config.model_dump_json()

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        return [_run_cell(cell) for cell in cells]

    def analyze(self, table: ResultTable) -> Results:
        """Per (source, target) pair and n: every protocol's error with its standard error, k*, the
        transferability and the defrosting curve (module docstring)."""
        # rows stored before hard_fraction existed had no easy / hard split
        table = dataclasses.replace(table, rows=[{"hard_fraction": 0.0, **r} for r in table.rows])
        pairs = []
        for key, rows in table.group_by(*_PAIR_FIELDS).items():
            pairs.append(_analyze_pair(dict(zip(_PAIR_FIELDS, key, strict=True)), rows))
        unconverged = sum(not r["converged"] for r in table.rows)
        summary: dict[str, Any] = {
            "source -> target pairs": len(pairs),
            "cells whose training did not converge (flagged, kept)": f"{unconverged} of {len(table.rows)}",
        }
        tables: dict[str, list[dict[str, Any]]] = {}
        for pair in pairs:
            for n_row in pair["best"]:
                summary[f"{pair['label']}, n = {n_row['n']}"] = (
                    f"k* = {n_row['k_star']} of {pair['n_blocks']}; scratch {n_row['scratch_error']:.3f}, best transfer "
                    f"{n_row['best_error']:.3f} ({n_row['best_protocol']}): transferability {n_row['transferability']:+.3f}"
                    if n_row["transferability"] is not None else f"k* = {n_row['k_star']} of {pair['n_blocks']}")
            tables[f"{pair['label']}: error by protocol"] = pair["table"]
            tables[f"{pair['label']}: k* and transferability"] = pair["best"]
        # several pretraining label functions of one source data set: accuracy against K (transfer_labels)
        curves = label_curves(table.rows, tuple(TransferConfig.model_fields))
        for curve in curves:
            tables[f"{curve['title']}: accuracy by pretraining labels"] = curve["rows"]
        return Results(tables=tables, summary=summary, data={"pairs": pairs, "label_curves": curves})

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


#: Source training: Adam, batch 128, early stopping (this patience, in epochs) on min(1000, source_size / 5)
#: further source images.
_SOURCE_BATCH, _SOURCE_VAL, _SOURCE_PATIENCE = 128, 1000, 2


def _source_val_size(cfg: TransferConfig) -> int:
    return min(_SOURCE_VAL, cfg.source_size // 5)


def _source_settings(cfg: TransferConfig) -> Any:
    """The trainer settings of a trained source: its own recipe, independent of the target's settings."""
    from transferlab.train.loop import TrainSettings

    return TrainSettings(optimizer="adam", lr=cfg.source_lr, batch_size=_SOURCE_BATCH, max_epochs=cfg.source_epochs,
                         patience=_SOURCE_PATIENCE)


def _source_fields(cfg: TransferConfig) -> dict[str, Any]:
    """Everything that determines a trained source (its cache key): the data, the architecture and the
    resolved trainer settings (not raw config fields, so no setting can change the network unseen)."""
    data = {f: getattr(cfg, f) for f in ("source", "architecture", "source_labels", "source_size")}
    fields = {"kind_version": TransferExperiment.version, **data, "settings": dataclasses.asdict(_source_settings(cfg)),
              "validation_images": _source_val_size(cfg)}
    if not _legacy_labels(cfg.source_labels):  # the relabelling's own settings (fine and coarse keep their keys)
        fields["relabel"] = {"images": "those of the fine source", "pca_dims": _RELABEL_DIMS, "version": 1}
        if cfg.source_labels.startswith("kmeans-aligned"):  # the rule of aligned_cluster_counts
            fields["relabel"]["clusters_per_class"] = "proportional to its images, at least 1"
    return fields


#: Principal components of the pixels that k-means source labels cluster (transferlab.tasks.relabel).
_RELABEL_DIMS = 50


def _legacy_labels(labels: str) -> bool:
    """fine and coarse: sources drawn class-balanced in their own labels (the original rule, kept so that
    their cached networks and published numbers stay valid); every other label function relabels the
    images of the fine source (class-balanced in the fine classes), so label functions are paired."""
    return labels in ("fine", "coarse")


def _dataset(name: str, labels: str) -> Any:
    from transferlab.tasks import load_dataset

    if name.startswith("npz:"):
        return _npz_dataset(Path(name[4:]))
    data = load_dataset(name)
    fn = parse_label_function(labels)
    if fn.kind == "fine":
        return data
    if fn.kind != "coarse":
        raise ConfigError(f"{name}: a data set is labelled fine or coarse[:G] here, not {labels!r}")
    return (data.regroup(fn.grouping) if fn.grouping else data).coarse()


def _npz_dataset(path: Path) -> Any:
    from transferlab.tasks.images import ImageDataset

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except FileNotFoundError:
        raise DataError(f"target file {path} does not exist") from None
    except KeyError as err:
        raise DataError(f"{path} lacks the array {err.args[0]!r} (needs x_train, y_train, x_test, y_test)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable .npz file of plain arrays: {err}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not np.issubdtype(x.dtype, np.floating) or x.ndim < 2:
            raise DataError(f"{path}: x_{split} must be a float array (n, *input_shape), got {x.dtype} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
            raise DataError(f"{path}: y_{split} must be integer labels of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if min(arrays["y_train"].min(), arrays["y_test"].min()) < 0:
        raise DataError(f"{path}: labels must be integers 0..C-1")
    return ImageDataset(name=str(path), x_train=arrays["x_train"].astype(np.float32), y_train=arrays["y_train"].astype(np.int64),
                        x_test=arrays["x_test"].astype(np.float32), y_test=arrays["y_test"].astype(np.int64),
                        classes=tuple(str(c) for c in range(n_classes)))


def _architecture(cfg: TransferConfig, input_shape: tuple[int, ...], n_classes: int, instances: int,
                  generator: torch.Generator) -> BlockNet:
    from transferlab.nets import mlp
    from transferlab.nets.cnn import small_cnn

    if cfg.architecture == "cnn":
        return small_cnn(input_shape, out_features=n_classes, instances=instances, generator=generator)
    return mlp(input_shape, [256, 256, 256], n_classes, instances=instances, generator=generator)


def _user_module(target: str) -> tuple[Any, Any, Any]:
    module_name, _, function = target.rpartition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"source module:{target}: cannot import {function!r} from {module_name!r} ({err})") from None
    import torch

    # a factory that draws default inits from the global RNG gets the same draws in every cell and process
    with torch.random.fork_rng():
        torch.manual_seed(int(_digest({"module": target})[:15], 16))
        built = factory()
    if not (isinstance(built, tuple) and len(built) == 3):
        raise ConfigError(f"source module:{target} must return (module, blocks, head), got {type(built).__name__}")
    return built


def build_source(cfg: TransferConfig, input_shape: tuple[int, ...], instances: int) -> tuple[BlockNet, dict[str, Any]]:
    """The source network of ``cfg`` with ``instances`` identical copies, and facts about it.

    Trained sources are trained on first use (one instance, seeded by the hash of their fields, so every
    cell gets the same network) and cached on disk; later calls load the cached weights (weights-only).
    """
    import torch

    from transferlab.nets import from_module

    kind, _, rest = cfg.source.partition(":")
    probe_gen = torch.Generator().manual_seed(0)  # draws only the adapter's contract-check input
    if kind == "pretrained":
        from transferlab.nets.pretrained import load_pretrained

        model = load_pretrained(rest, num_classes=None)  # type: ignore[arg-type]
        if tuple(input_shape) != (1, 28, 28):
            raise DataError(f"pretrained sources take grey 28 x 28 images (1, 28, 28); the target's are {input_shape}")
        # a loop over instances: on CPU it runs these depthwise-conv networks 2-3x faster than vmap
        net = from_module(model.module, blocks=model.block_groups, head=model.head_group, input_shape=input_shape,
                          instances=instances, generator=probe_gen, mode="loop", init=model.init)
        return net, {}
    if kind == "module":
        module, blocks, head = _user_module(rest)
        return from_module(module, blocks=blocks, head=head, input_shape=input_shape, instances=instances,
                           generator=probe_gen), {}
    state, facts = _trained_source(cfg)
    if tuple(facts["input_shape"]) != tuple(input_shape):
        raise DataError(f"the source {cfg.source} takes inputs {tuple(facts['input_shape'])}; the target's are {input_shape}")
    net = _architecture(cfg, tuple(input_shape), facts["n_classes"], instances, probe_gen)
    net.load_state_dict({k: v.expand(instances, *v.shape[1:]).clone() for k, v in state.items()})
    return net, {"source_test_accuracy": facts["test_accuracy"], "source_classes": facts["n_classes"]}


#: Trained sources already loaded in this process, by digest (one source serves many cells of a batch).
_LOADED: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}


def _trained_source(cfg: TransferConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained source's one-instance ``state_dict`` and facts: from memory, the disk cache, or trained now."""
    key = _digest(_source_fields(cfg))
    return load_or_train(key, lambda: _train_source(cfg, key), memory=_LOADED, keep=1)


def _train_source(cfg: TransferConfig, digest: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train one source network on ``source_size`` images of its data set; early-stopped on 1000 more."""
    import torch

    from transferlab.train.loop import evaluate, fit

    from transferlab.tasks.relabel import relabel

    started = time.monotonic()
    name = cfg.source.partition(":")[2]
    legacy = _legacy_labels(cfg.source_labels)
    data = _dataset(name, cfg.source_labels if legacy else "fine")
    # a relabelled source draws the images (and the initial weights) of the fine source: the same seeds
    draw = digest if legacy else _digest(_source_fields(cfg.model_copy(update={"source_labels": "fine"})))
    rng = np.random.default_rng(int(draw[:15], 16))
    generator = torch.Generator().manual_seed(int(draw[15:30], 16))
    train_idx, val_idx = _disjoint_subsets(data.y_train, cfg.source_size, _source_val_size(cfg), rng, data.n_classes)
    y_train, y_val, y_test, n_classes = data.y_train[train_idx], data.y_train[val_idx], data.y_test, data.n_classes
    if not legacy:
        fn = parse_label_function(cfg.source_labels)
        hierarchy = (data.regroup(fn.grouping) if fn.grouping else data).hierarchy
        y_train, (y_val, y_test) = relabel(fn, data.x_train[train_idx], y_train, hierarchy,
                                           np.random.default_rng(int(digest[30:45], 16)), dims=_RELABEL_DIMS,
                                           others=((data.x_train[val_idx], y_val), (data.x_test, y_test)))
        n_classes = fn.n_classes(data.n_classes, hierarchy)
    x = torch.tensor(data.x_train)
    net = _architecture(cfg, tuple(data.image_shape), n_classes, 1, generator)
    settings = _source_settings(cfg)
    record = fit(net, x[train_idx], torch.tensor(y_train), settings=settings, generator=generator,
                 val=(x[val_idx], torch.tensor(y_val)))
    test = evaluate(net, torch.tensor(data.x_test), torch.tensor(y_test))
    facts = {"source": cfg.source, "input_shape": list(data.image_shape), "n_classes": n_classes,
             "test_accuracy": float(test["accuracy"][0]), "stop_epoch": int(record.stop_epoch[0]),
             "converged": bool(record.converged[0]), "seconds": round(time.monotonic() - started, 1)}
    return {k: v.detach()[:1].clone() for k, v in net.state_dict().items()}, facts


# --------------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------------


def _disjoint_subsets(y: np.ndarray, n: int, n_val: int, rng: np.random.Generator, n_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced training indices of size n and, from the rest, validation indices of size n_val."""
    from transferlab.tasks.images import class_balanced_indices

    classes = [str(c) for c in range(n_classes)]
    train = class_balanced_indices(y, n, rng, classes=classes)
    if n_val == 0:
        return train, train[:0]
    rest = np.setdiff1d(np.arange(y.size), train)
    return train, rest[class_balanced_indices(y[rest], n_val, rng, classes=classes)]


def _subset_rngs(cell: Cell, cfg: TransferConfig) -> list[np.random.Generator]:
    """One generator per instance for its target subsets, seeded by (spec seed, replicate, target, labels, n,
    val_size, instance) only: every protocol and k of a replicate sees the same images, so the cells are
    paired (their differences are not blurred by different draws)."""
    words = [int(c, 16) for c in _digest({"target": cfg.target, "labels": cfg.target_labels, "n": cfg.n,
                                          "val": cfg.val_size})[:32]]
    return [np.random.default_rng(np.random.SeedSequence([cell.seed, cell.replicate, *words], spawn_key=(i,)))
            for i in range(cfg.instances)]


def _target_data(cell: Cell, cfg: TransferConfig) -> TargetData:
    import torch

    from transferlab.protocols.transfer import TargetData
    from transferlab.tasks.images import class_balanced_indices

    data = _dataset(cfg.target, cfg.target_labels)
    if cfg.n < data.n_classes:
        raise ConfigError(f"n = {cfg.n} is below the target's {data.n_classes} classes (every class needs an example)")
    picks = [_disjoint_subsets(data.y_train, cfg.n, cfg.val_size, rng, data.n_classes) for rng in _subset_rngs(cell, cfg)]
    x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
    test = _test_indices(cfg, data)
    val = {}
    if cfg.val_size:
        val = {"x_val": torch.stack([x[v] for _, v in picks]), "y_val": torch.stack([y[v] for _, v in picks])}
    return TargetData(x_train=torch.stack([x[t] for t, _ in picks]), y_train=torch.stack([y[t] for t, _ in picks]),
                      x_test=torch.tensor(data.x_test[test]), y_test=torch.tensor(data.y_test[test]),
                      n_classes=data.n_classes, **val)


def _test_indices(cfg: TransferConfig, data: Any) -> np.ndarray:
    """The shared test subset: ``test_size`` class-balanced images of the test split (fixed seed), or all."""
    from transferlab.tasks.images import class_balanced_indices

    if cfg.test_size == 0 or cfg.test_size >= data.y_test.size:
        return np.arange(data.y_test.size)
    return class_balanced_indices(data.y_test, cfg.test_size, np.random.default_rng(_TEST_SEED))


# --------------------------------------------------------------------------------------------------
# easy and hard test samples
# --------------------------------------------------------------------------------------------------

#: The reference classifier that defines hard samples: multinomial logistic regression (penalty l2, stopped
#: at max |gradient| <= tol) on the first dims principal components of the pixels, fitted on the whole
#: training split of the target (with the target's labels); the components are those of 10,000 evenly spaced
#: training images (every ceil(n / 10,000)-th: enough to fix 50 components, 6-13 times cheaper than the whole
#: split, and every domain of a concatenated data set is represented).
_REFERENCE_PCA_IMAGES = 10000
_REFERENCE_DIMS, _REFERENCE_L2, _REFERENCE_TOL, _REFERENCE_ITER = 50, 1e-4, 1e-4, 2000
_REFERENCES: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}


def reference_margins(target: str, target_labels: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Per test image of ``target`` (labelled by ``target_labels``): the reference classifier's margin
    m = z_y - max_{c != y} z_c (its true-class logit minus the best other logit; m < 0: misclassified),
    shape (n_test,), and facts about the classifier (test accuracy, convergence). Fitted once, cached on
    disk like a trained source (the reference is independent of every source and of the transfer runs)."""
    key = _digest({"reference": "pca-logistic", "target": target, "target_labels": target_labels,
                   "dims": _REFERENCE_DIMS, "pca_images": f"{_REFERENCE_PCA_IMAGES} evenly spaced", "l2": _REFERENCE_L2, "tol": _REFERENCE_TOL, "max_iter": _REFERENCE_ITER})
    state, facts = load_or_train(key, lambda: _fit_reference(target, target_labels), memory=_REFERENCES, keep=2)
    return state["margin"].numpy(), facts


def _fit_reference(target: str, target_labels: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    from transferlab.protocols._probe import linear_probe
    from transferlab.tasks.relabel import pca

    started = time.monotonic()
    data = _dataset(target, target_labels)
    flat = data.x_train.reshape(len(data.x_train), -1)
    mean, components = pca(flat[:: math.ceil(len(flat) / _REFERENCE_PCA_IMAGES)], _REFERENCE_DIMS)
    project = lambda x: torch.tensor((x.reshape(len(x), -1) - mean) @ components)  # noqa: E731
    probe = linear_probe(project(data.x_train), torch.tensor(data.y_train), n_classes=data.n_classes,
                         l2=_REFERENCE_L2, tol=_REFERENCE_TOL, max_iter=_REFERENCE_ITER)
    z = probe.predict(project(data.x_test))[0]
    y = torch.tensor(data.y_test)
    true = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], -math.inf).amax(1)
    facts = {"test_accuracy": float((z.argmax(1) == y).double().mean()), "converged": bool(probe.converged[0]),
             "iterations": probe.iterations, "seconds": round(time.monotonic() - started, 1)}
    return {"margin": (true - other).double()}, facts


def hard_mask(margins: np.ndarray, labels: np.ndarray, fraction: float) -> np.ndarray:
    """Hard samples: within each class c (of n_c samples), the ceil(fraction n_c) samples with the lowest
    ``margins`` (ties to the earlier sample), so easy and hard sets keep the class proportions. (n,) bool."""
    hard = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(margins[members], kind="stable")]
        hard[order[: math.ceil(fraction * members.size)]] = True
    return hard


#: The logistic probe stops at max |gradient| <= this (the objective is a mean cross-entropy plus the
#: penalty; at 1e-5 the test error no longer moves, and tighter tolerances cost many more L-BFGS steps).
_PROBE_TOL = 1e-5
#: Validate about every this many optimizer steps (at least once per epoch): at small n an epoch is one
#: step, and validating after each would cost more than the training.
_VAL_INTERVAL_STEPS = 10


def _settings(cfg: TransferConfig, n: int) -> Any:
    """Trainer settings for ``n`` target training images: the step budgets become whole epochs.

    With s = ceil(n / batch_size) steps per epoch: at most ceil(max_steps / s) epochs, validation every
    v = ceil(10 / s) epochs and patience max(ceil(patience_steps / s), v) epochs, so every n gets about the
    same optimizer budget and the same early-stopping slack measured in steps.
    """
    from transferlab.train.loop import TrainSettings

    per_epoch = math.ceil(n / cfg.batch_size)
    every = math.ceil(_VAL_INTERVAL_STEPS / per_epoch)
    return TrainSettings(optimizer=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                         max_epochs=math.ceil(cfg.max_steps / per_epoch), val_every=every,
                         patience=max(math.ceil(cfg.patience_steps / per_epoch), every) if cfg.val_size else None)


def _improved(result: Any) -> Any:
    """Per instance: whether training beat its initial weights on validation (always true for the probe)."""
    import torch

    return result.training.improved if result.training is not None else torch.ones_like(result.converged)


def _run_cell(cell: Cell) -> dict[str, Any]:
    cfg: TransferConfig = cell.config  # type: ignore[assignment]
    data = _target_data(cell, cfg)
    source, facts = build_source(cfg, tuple(data.x_test.shape[1:]), cfg.instances)
    L = source.n_blocks
    if cfg.k is not None and cfg.k > L:
        raise ConfigError(f"k = {cfg.k} is out of range: the source {cfg.source} has {L} blocks (k in 0..{L})")
    settings = _settings(cfg, cfg.n)
    subsets = None
    if cfg.hard_fraction > 0:
        margins, reference = reference_margins(cfg.target, cfg.target_labels)
        test = _test_indices(cfg, _dataset(cfg.target, cfg.target_labels))
        hard = hard_mask(margins[test], data.y_test.numpy(), cfg.hard_fraction)
        subsets = {"easy": ~hard, "hard": hard}
        facts = {**facts, "reference_test_accuracy": reference["test_accuracy"], "hard_samples": int(hard.sum())}
    return {"n_blocks": L, **facts, **protocol_row(cfg, source, data, settings, cell.torch_generator(), subsets)}


def protocol_row(cfg: Any, source: BlockNet, data: TargetData, settings: Any, generator: torch.Generator,
                 subsets: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Run ``cfg.protocol`` (fields ``protocol``, ``k``, ``reinit_unfrozen``, ``l2``) from ``source`` on ``data``
    and return the result fields of a row (shared by the ``transfer`` and ``defrost`` kinds): ``k``,
    ``test_error`` (mean over instances), ``test_error_instances``, ``test_loss``, ``converged``,
    ``unconverged``, ``stop_epoch_instances``, and ``stage_k`` / ``stage_error`` for defrosting. A run counts
    as unconverged when its trainer says so, or when validation never beat its initial weights.

    ``subsets`` (name -> (n_test,) bool mask of the test samples, e.g. easy and hard) adds, per subset,
    ``<name>_error`` and ``<name>_error_instances``: the final network's error on those test samples."""
    from transferlab.protocols import transfer as tp

    row: dict[str, Any] = {}
    if cfg.protocol == "defrost":
        runs = tp.incremental_defrost(source, data, settings=settings, generator=generator)
        row["stage_k"] = [s.k for s in runs]
        row["stage_error"] = [float(s.test_error.mean()) for s in runs]
    elif cfg.protocol == "linear_probe":
        runs = [tp.linear_probe_transfer(source, data, l2=cfg.l2, tol=_PROBE_TOL)]
    elif cfg.protocol == "lp_ft":
        runs = [tp.lp_ft(source, data, l2=cfg.l2, settings=settings, generator=generator, tol=_PROBE_TOL)]
    elif cfg.protocol == "scratch":
        runs = [tp.scratch(source, data, settings=settings, generator=generator)]
    elif cfg.protocol == "finetune":
        runs = [tp.finetune(source, data, settings=settings, generator=generator)]
    else:
        runs = [tp.freeze_first_k(source, cfg.k or 0, data, reinit_unfrozen=cfg.reinit_unfrozen, settings=settings,
                                  generator=generator)]
    result = runs[-1]
    unconverged = sum(int((~r.converged | ~_improved(r)).sum()) for r in runs)
    subset_errors = None
    if subsets:
        assert result.net is not None  # the last stage of every protocol keeps its network
        wrong = _wrong(result.net, data)
        subset_errors = {name: wrong[:, np.asarray(mask, dtype=bool)].mean(1) for name, mask in subsets.items()}
    row.update(run_fields(result.k, result.test_error.double().numpy(), float(result.test_loss.mean()), unconverged,
                          [] if result.stop_epoch is None else [int(e) for e in result.stop_epoch], subset_errors))
    return row


def _wrong(net: BlockNet, data: TargetData) -> np.ndarray:
    """(I, n_test) float: 1 where instance i misclassifies test sample j (the argmax of its logits)."""
    import torch

    from transferlab.protocols.transfer import _features

    L = net.n_blocks
    with torch.no_grad():
        logits = net.forward_from(_features(net, data.x_test, L), L)
    return (logits.argmax(-1) != data.y_test.to(logits.device)).double().cpu().numpy()


def run_fields(k: int, errors: np.ndarray, test_loss: float, unconverged: int, stop_epochs: list[int],
               subset_errors: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The result fields of a row from one run of I instances: ``k``, ``test_error`` (mean of ``errors``,
    shape (I,)), ``test_error_instances``, ``test_loss`` (mean over instances), ``converged`` (no
    instance unconverged), ``unconverged`` (count) and ``stop_epoch_instances``; for every entry of
    ``subset_errors`` (name -> (I,) errors on a subset of the test samples), ``<name>_error`` (mean) and
    ``<name>_error_instances``."""
    row = {
        "k": k,
        "test_error": float(errors.mean()),
        "test_error_instances": [float(e) for e in errors],
        "test_loss": test_loss,
        "converged": unconverged == 0,
        "unconverged": unconverged,
        "stop_epoch_instances": stop_epochs,
    }
    for name, values in (subset_errors or {}).items():
        row[f"{name}_error"] = float(np.mean(values))
        row[f"{name}_error_instances"] = [float(e) for e in values]
    return row


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------

#: Fields that define one (source, target) pair; n, protocol, k and reinit_unfrozen vary inside it.
_PAIR_FIELDS = tuple(f for f in TransferConfig.model_fields if f not in ("n", "protocol", "k", "reinit_unfrozen", "instances"))


def pooled_error(rows: list[dict[str, Any]], field: str = "test_error") -> tuple[float, float | None, int]:
    """Mean test error, its standard error and the number of runs, pooling every instance of every row
    (``<field>_instances``, e.g. ``test_error_instances`` or ``hard_error_instances``) of ``rows``."""
    from transferlab.report.plots import mean_se

    values = np.array([v for r in rows for v in r[f"{field}_instances"]], dtype=float)
    mean, se = mean_se(values)
    return mean, se, values.size


def _pair_label(pair: dict[str, Any]) -> str:
    source = pair["source"]
    if source.startswith("trained:"):
        labels = pair["source_labels"]
        source = f"{pair['architecture'].upper()} trained on {source[8:]}" + ("" if labels == "fine" else f" ({labels})")
    target = pair["target"] + ("" if pair["target_labels"] == "fine" else f" ({pair['target_labels']} labels)")
    return f"{source} -> {target}"


def _analyze_pair(pair: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    n_blocks = int(rows[0]["n_blocks"])
    table, best, curves, defrost = [], [], {}, {}
    for n in sorted({r["n"] for r in rows}):
        at_n = [r for r in rows if r["n"] == n]
        entries: dict[tuple[str, int, bool], tuple[float, float | None, int]] = {}
        for (protocol, k, reinit), group in ResultTable(at_n).group_by("protocol", "k", "reinit_unfrozen").items():
            k_used = int(group[0]["k"])
            mean, se, count = pooled_error(group)
            entries[(protocol, k_used, reinit)] = (mean, se, count)
            table.append({"n": n, "protocol": protocol, "k": k_used, "reinit_unfrozen": reinit, "test_error": mean,
                          "se": se, "runs": count, "unconverged runs": sum(r["unconverged"] for r in group)})
            for split in ("easy", "hard"):
                if f"{split}_error_instances" in group[0]:
                    table[-1][f"{split}_error"], table[-1][f"{split}_se"], _ = pooled_error(group, split + "_error")
            if protocol == "defrost":
                stages = np.array([r["stage_error"] for r in group], dtype=float)
                defrost[n] = (group[0]["stage_k"], stages.mean(0))
        curve = sorted((k, *v) for (p, k, reinit), v in entries.items() if p in ("freeze", "finetune") and not reinit)
        curves[n] = {"kept": curve,
                     "reinit": sorted((k, *v) for (p, k, reinit), v in entries.items() if p == "freeze" and reinit),
                     "scratch": entries.get(("scratch", 0, False)),
                     "probe": entries.get(("linear_probe", n_blocks, False))}
        # redrawn blocks are not transfer (freeze k = 0 with reinit is training from scratch); sorted, so that an
        # exact tie (errors are multiples of 1 / test images) goes to the smallest k, as it does for k*
        transfers = {f"{p} k={k}": v for (p, k, r), v in sorted(entries.items()) if p != "scratch" and not r}
        k_star = min(curve, key=lambda c: c[1])[0] if curve else None
        row: dict[str, Any] = {"n": n, "k_star": k_star, "scratch_error": None, "best_error": None,
                               "best_protocol": None, "transferability": None, "transferability_se": None}
        if transfers:
            name, (err, se, _) = min(transfers.items(), key=lambda kv: kv[1][0])
            row.update(best_error=err, best_protocol=name)
            scratch = curves[n]["scratch"]
            if scratch is not None:
                both_known = scratch[1] is not None and se is not None
                row.update(scratch_error=scratch[0], transferability=scratch[0] - err,
                           transferability_se=math.hypot(scratch[1], se) if both_known else None)
        best.append(row)
    return {"label": _pair_label(pair), "pair": pair, "n_blocks": n_blocks, "table": table, "best": best,
            "curves": curves, "defrost": defrost}


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:60]


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    plan = []
    pairs = results.data.get("pairs", [])
    slugs: list[str] = []
    for pair in pairs:
        slug = _slug(pair["label"])
        slug = slug if slug not in slugs else f"{slug}_{len(slugs)}"  # labels cut to one slug stay apart
        slugs.append(slug)
        if any(c["kept"] for c in pair["curves"].values()):
            plan.append((f"transfer_error_vs_k_{slug}", _curve_caption(pair),
                         functools.partial(_curve_figure, pair)))
        if pair["defrost"]:
            plan.append((f"transfer_defrost_{slug}",
                         f"Incremental defrosting, {pair['label']}: test error after each stage, from all blocks frozen "
                         f"but the head (k = {pair['n_blocks']}, left) to all trained (k = 0, right); each stage continues "
                         "from the previous one's weights. One line per target size n; means over instances and "
                         "replicates.", functools.partial(_defrost_figure, pair)))
    figure_groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for curve in results.data.get("label_curves", []):
        setting = curve["setting"]
        figure_groups.setdefault((setting["source"], setting["target"], setting["target_labels"], setting["n"]),
                                 []).append(curve)
    for (source, target, labels, n), curves in figure_groups.items():
        plan.append((f"transfer_labels_{_slug(f'{source[8:]} {target} {labels} n{n}')}",
                     f"Pretrained on {source[8:]} with each label function, transferred to {target} ({labels} labels), "
                     f"n = {n}: downstream accuracy against the number K of pretraining classes; lines: aligned "
                     "k-means (within each coarse class), global k-means and balanced random labels; star: fine "
                     "labels, diamond: coarse labels. Easy and hard test samples (lowest-margin samples under a "
                     "reference classifier) separately where measured. Bars: ± 1 standard error over instances and "
                     "replicates.", functools.partial(label_figure, curves)))
    if any(row["k_star"] is not None for p in pairs for row in p["best"]):
        plan.append(("transfer_k_star",
                     "k*, the number of frozen source blocks with the lowest mean target test error (fine-tuning "
                     "is k = 0, a new head on every frozen block is k = L), against the target size n, one line "
                     "per source -> target pair (lines are offset vertically a little so that equal values stay "
                     "visible). k* is the argmin of noisy means: depths within about 2 standard errors of it are "
                     "not distinguished (see each pair's error-against-k figure).",
                     functools.partial(_k_star_figure, pairs)))
    if any(row["transferability"] is not None for p in pairs for row in p["best"]):
        plan.append(("transfer_transferability",
                     "Transferability against target size n: scratch test error minus the best transfer protocol's "
                     "(any protocol and depth). Above 0: transfer helps. Bars: ± 2 standard errors (instances and "
                     "replicates pooled; the two errors treated as independent). Taking the best of several noisy "
                     "estimates biases it low, so small positive values are not evidence on their own.", functools.partial(_transferability_figure, pairs)))
    return plan


def _curve_caption(pair: dict[str, Any]) -> str:
    return (f"{pair['label']}: target test error against the number k of frozen source blocks (k = 0: full "
            f"fine-tuning; k = {pair['n_blocks']}: only a new head trains), one colour per target size n. Solid: the "
            "unfrozen blocks start from the source weights; dashed: they are re-initialised. Dotted horizontal line: "
            "training from scratch; cross at the right: the convex linear probe. Bars: ± 2 standard errors over "
            "instances and replicates; the circled point is k*, the best depth.")


def _curve_figure(pair: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for i, (n, c) in enumerate(sorted(pair["curves"].items())):
        color = f"C{i}"
        for key, style in (("kept", "-"), ("reinit", "--")):
            if c[key]:
                k = [p[0] for p in c[key]]
                m = [p[1] for p in c[key]]
                se = np.array([p[2] or 0.0 for p in c[key]])
                ax.errorbar(k, m, yerr=2 * se, fmt="o" + style, color=color, ms=4, capsize=2,
                            label=f"n = {n}" + (" (reinit)" if key == "reinit" else ""))
        if c["kept"]:
            k_star, m_star = min(((kk, mm) for kk, mm, _, _ in c["kept"]), key=lambda t: t[1])
            ax.plot([k_star], [m_star], "o", ms=11, mfc="none", mec=color)
        if c["scratch"] is not None:
            ax.axhline(c["scratch"][0], color=color, ls=":", lw=1)
        if c["probe"] is not None:
            ax.plot([pair["n_blocks"]], [c["probe"][0]], "x", color=color, ms=8)
    ax.set_xticks(range(pair["n_blocks"] + 1))
    ax.set_xlim(-0.3, pair["n_blocks"] + 0.3)
    ax.set_xlabel("k, blocks frozen")
    ax.set_ylabel("target test error")
    ax.set_title(pair["label"], fontsize=10)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _defrost_figure(pair: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for i, (n, (ks, errors)) in enumerate(sorted(pair["defrost"].items())):
        ax.plot(ks, errors, "o-", color=f"C{i}", label=f"n = {n}")
    ax.set_xlim(pair["n_blocks"] + 0.3, -0.3)
    ax.set_xlabel("k, blocks still frozen (stages run left to right)")
    ax.set_ylabel("target test error")
    ax.set_title(f"incremental defrosting: {pair['label']}", fontsize=10)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _k_star_figure(pairs: list[dict[str, Any]]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    offsets = np.linspace(-0.12, 0.12, len(pairs)) if len(pairs) > 1 else [0.0]
    for i, (pair, offset) in enumerate(zip(pairs, offsets, strict=True)):
        rows = [r for r in pair["best"] if r["k_star"] is not None]
        if rows:
            ax.plot([r["n"] for r in rows], [r["k_star"] + offset for r in rows], "o-", color=f"C{i}",
                    label=pair["label"])
    ax.set_xscale("log")
    sizes = sorted({r["n"] for p in pairs for r in p["best"]})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    top = max(p["n_blocks"] for p in pairs)
    ax.set_yticks(range(top + 1))
    ax.set_ylim(-0.4, top + 0.4)
    ax.set_xlabel("target training size n")
    ax.set_ylabel("k*, blocks frozen")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _transferability_figure(pairs: list[dict[str, Any]]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for i, pair in enumerate(pairs):
        rows = [r for r in pair["best"] if r["transferability"] is not None]
        if rows:
            ax.errorbar([r["n"] for r in rows], [r["transferability"] for r in rows],
                        yerr=[2 * (r["transferability_se"] or 0.0) for r in rows], fmt="o-", color=f"C{i}", capsize=2,
                        label=pair["label"])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    sizes = sorted({r["n"] for p in pairs for r in p["best"]})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("target training size n")
    ax.set_ylabel("scratch error − best transfer error")
    legend_outside(ax)
    fig.tight_layout()
    return fig
