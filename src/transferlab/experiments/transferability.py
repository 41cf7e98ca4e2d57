"""``transferability``: which predictor of transfer works, measured on a model zoo; and is ``advise`` right?

A benchmark in the style of the model-selection literature (LogME, You et al. 2021; LEEP, Nguyen et al. 2020;
NLEEP, Li et al. 2021; GBC, Pandy et al. 2022; TransRate, Huang et al. 2022), with the stability analysis of
Agostinelli et al. (2022, "How stable are transferability metrics evaluations?"). One cell is one
(``source``, ``target``, ``n``, ``protocol``) with ``instances`` seeds; every source sees, per instance, the same
class-balanced target subset of ``n`` training images (and the same validation and test images): the subsets are
drawn by the ``transfer`` kind's own code (:mod:`transferlab.experiments.transfer`), seeded by the target fields
only, so the sources are compared on paired data.

The zoo (``source``):

- ``"pretrained:mobilenet_v2"``, ``"pretrained:efficientnet_lite0"``: the ImageNet networks, as the ``transfer``
  kind builds them (:func:`~transferlab.experiments.transfer.build_source`);
- ``"<arch>:<data set>[:coarse]"`` with ``arch`` ``cnn`` or ``mlp``: the ``transfer`` kind's trained source
  (``trained:<data set>``, :func:`~transferlab.nets.cnn.small_cnn` with channels (16, 32) and a 128-wide dense
  block, or the 3 x 256 :func:`~transferlab.nets.mlp.mlp`), trained on ``source_size`` images with fine or coarse
  labels and cached by the ``transfer`` kind (the same network ``transferlab advise`` builds);
- ``"<arch>-<w>:<data set>[:coarse]"``: a width variant, trained here with the same recipe
  (:func:`zoo_source`): ``cnn-w`` has channels (w, 2w) and a dense block of 8w (``cnn-16`` is the default),
  ``mlp-w`` three hidden layers of width w. A data set whose images differ from the target's in size (``digits``,
  8 x 8) is resized to the target's (bilinear) and trained here too.

Targets (``target``): ``"<data set>[:coarse]"``, a data set name of :func:`transferlab.tasks.load_dataset`, class
subsets included (``"fashion_mnist[0,2,4,6]"``).

Protocols (``protocol``), each a cell:

- ``scores``: the predictors, per instance, on that instance's ``n`` training images (larger = predicted better;
  distances and the feature overlap enter with a minus sign): on the source's frozen features after block L,
  LogME, H-score (Ledoit-Wolf shrinkage), NLEEP, GBC, TransRate and ``-feature_overlap`` (ridge
  :data:`OVERLAP_RIDGE`); on the source classifier's probabilities (trained sources only: the packaged pretrained
  networks ship without theirs) LEEP and NCE; between ``divergence_size`` source training images and the target
  images (trained sources only: ImageNet is not installed), ``-KL`` of Gaussian fits (shrinkage
  :data:`KL_SHRINKAGE`), ``-W1`` (exact, on ``n`` source images) and ``-MMD^2`` (RBF, median bandwidth), all on
  raw pixels; and linear CKA between the source's features and those of a reference network trained on the
  target (the ``cnn`` architecture, ``reference_size`` target training images, cached);
- ``linear_probe``, ``finetune``, ``scratch``: the ``transfer`` kind's protocols (:func:`protocol_row`);
- ``freeze_sweep``: ``freeze`` with blocks 1..k frozen for every k from ``max(1, L - max_unfrozen)`` to L (all
  k >= 1 when ``max_unfrozen`` is None); the best freeze-k is chosen in the analysis;
- ``advise``: :func:`transferlab.advise.advise` at target size ``n`` with ``advise_steps`` steps per run
  (validation of the advisor against the measured sweep of the same pair; see :func:`advisor_validation`).

Ground truth per (source, target, n, instance): the accuracy after the linear probe, after the best freeze-k (the
k with the lowest error averaged over instances, the oracle's depth) and after full fine-tuning.
:meth:`TransferabilityExperiment.analyze` ranks the sources per setup (target, n, protocol, seed) with every
predictor (weighted Kendall tau and Pearson, :mod:`transferlab.measures.ranking`) and reports their stability.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from transferlab.errors import ConfigError, DataError, TransferlabError
from transferlab.experiments._source_cache import digest, load_or_train
from transferlab.experiments.base import Cell, Experiment, Results, ResultTable
from transferlab.experiments.transfer import TargetTrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from transferlab.experiments.transfer import TransferConfig
    from transferlab.nets.blocks import BlockNet
    from transferlab.protocols.transfer import TargetData

__all__ = ["FEATURE_PREDICTORS", "PREDICTORS", "TransferabilityConfig", "TransferabilityExperiment", "ZooSource",
           "advisor_validation", "parse_source", "ranking_rows", "write_tables", "zoo_source"]

Protocol = Literal["scores", "linear_probe", "freeze_sweep", "finetune", "scratch", "advise"]

#: Predictors defined for every source (they need only the frozen features).
FEATURE_PREDICTORS = ("LogME", "H-score", "NLEEP", "GBC", "TransRate", "-overlap", "CKA")
#: Every predictor; LEEP and NCE need the source's classifier, the divergences its input data (trained sources).
PREDICTORS = (*FEATURE_PREDICTORS, "LEEP", "NCE", "-KL", "-W1", "-MMD")
#: The ground-truth protocols ranked (the accuracies predictors are judged against).
GROUND_TRUTH = ("linear_probe", "freeze_best", "finetune")
#: Ridge of the feature-overlap fit, relative to tr(F^T F) / d: the frozen features often have d > n, where the
#: unpenalised fit interpolates (residual 0 for every source).
OVERLAP_RIDGE = 0.1
#: Shrinkage of each pixel covariance towards tr(S)/d I for the Gaussian KL (784 pixels, tens of images).
KL_SHRINKAGE = 0.1
#: Default widths: cnn-16 (channels 16, 32; dense 128) and mlp-256 are the ``transfer`` kind's networks.
_DEFAULT_WIDTH = {"cnn": 16, "mlp": 256}


# --------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------


class TransferabilityConfig(TargetTrainingConfig):
    """One cell of the ``transferability`` experiment (see the module docstring)."""

    source: str = Field(description="pretrained:<name> | <cnn|mlp>[-<width>]:<data set>[:coarse]")
    target: str = Field(description="<data set>[:coarse] (class subsets: name[i,j,...])")
    n: int = Field(ge=2, description="target training images per instance (class-balanced)")
    protocol: Protocol = "scores"
    instances: int = Field(3, ge=1, description="seeds, each with its own target subset")
    test_size: int = Field(1000, ge=0, description="shared test images (0: the whole test split)")
    source_size: int = Field(10000, ge=10, description="training images of a trained source")
    max_unfrozen: int | None = Field(None, ge=0, description="freeze_sweep: train at most this many blocks (None: all k)")
    reference_size: int = Field(2000, ge=10, description="target training images of the CKA reference network")
    divergence_size: int = Field(500, ge=2, description="source images compared with the target's (KL, MMD)")
    advise_steps: int = Field(50, ge=50, le=2000, description="advise: optimizer steps per training run")
    advise_seeds: int = Field(2, ge=2, description="advise: seeds per sweep cell")

    @model_validator(mode="after")
    def _known_names(self) -> TransferabilityConfig:
        try:
            zoo = parse_source(self.source)
            _parse_target(self.target)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        _transfer_config(self)  # the transfer kind's checks of the source and target (label functions, names)
        if self.protocol == "advise" and zoo.variant:
            raise ValueError(f"protocol 'advise' needs a source that transferlab advise builds (pretrained:<name> or "
                             f"a default-width cnn / mlp), not the width variant {self.source!r}")
        if self.protocol == "advise" and self.source_lr != 1e-3:
            raise ValueError("protocol 'advise': transferlab advise trains its sources with source_lr = 1e-3")
        return self


@dataclass(frozen=True)
class ZooSource:
    """A parsed zoo name: ``kind`` (``pretrained``, ``cnn`` or ``mlp``), ``width``, ``data`` (the data set or the
    pretrained network's name) and ``labels`` (fine or coarse). ``variant``: a width other than the ``transfer``
    kind's (trained here, not by the ``transfer`` kind)."""

    kind: str
    data: str
    labels: str = "fine"
    width: int | None = None

    @property
    def variant(self) -> bool:
        return self.kind != "pretrained" and self.width != _DEFAULT_WIDTH[self.kind]

    @property
    def transfer_source(self) -> str:
        """The ``transfer`` kind's name of this source (``pretrained:<name>`` or ``trained:<data set>``)."""
        return f"pretrained:{self.data}" if self.kind == "pretrained" else f"trained:{self.data}"


def parse_source(name: str) -> ZooSource:
    """Parse ``pretrained:<name>`` or ``<cnn|mlp>[-<width>]:<data set>[:coarse]``; :class:`ConfigError` if malformed."""
    from transferlab.tasks.images import split_dataset_name

    head, _, rest = name.partition(":")
    if head == "pretrained" and rest:
        return ZooSource("pretrained", rest)
    arch, _, width = head.partition("-")
    data, _, labels = rest.partition(":")
    if arch not in _DEFAULT_WIDTH or not data or labels not in ("", "coarse") or (width and not width.isdigit()):
        raise ConfigError(f"source must be pretrained:<name> or <cnn|mlp>[-<width>]:<data set>[:coarse], got {name!r}")
    if width and int(width) < 1:
        raise ConfigError(f"source {name!r}: the width must be >= 1")
    split_dataset_name(data)
    return ZooSource(arch, data, labels or "fine", int(width) if width else _DEFAULT_WIDTH[arch])


def _parse_target(name: str) -> tuple[str, str]:
    """``(data set, labels)`` of ``<data set>[:coarse]``."""
    from transferlab.tasks.images import split_dataset_name

    data, _, labels = name.partition(":")
    if not data or labels not in ("", "coarse"):
        raise ConfigError(f"target must be <data set>[:coarse], got {name!r}")
    split_dataset_name(data)
    return data, labels or "fine"


def _transfer_config(cfg: TransferabilityConfig, **update: Any) -> TransferConfig:
    """The ``transfer`` kind's config of this cell: its target data, settings and (default) source."""
    from transferlab.experiments.transfer import TransferConfig

    zoo = parse_source(cfg.source)
    target, labels = _parse_target(cfg.target)
    shared = {f: getattr(cfg, f) for f in ("val_size", "source_lr", "optimizer", "lr", "weight_decay", "batch_size",
                                           "max_steps", "patience_steps", "l2", "n", "instances", "test_size",
                                           "source_size")}
    fields = {"source": zoo.transfer_source, "target": target, "target_labels": labels, "protocol": "linear_probe",
              "architecture": zoo.kind if zoo.kind != "pretrained" else "cnn", "source_labels": zoo.labels, **shared}
    return TransferConfig(**{**fields, **update})


# --------------------------------------------------------------------------------------------------
# the zoo
# --------------------------------------------------------------------------------------------------

#: Width variants and CKA references already loaded in this process, by digest.
_LOADED: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}


def _network(kind: str, width: int, input_shape: tuple[int, ...], n_classes: int, instances: int,
             generator: torch.Generator) -> BlockNet:
    from transferlab.nets import mlp
    from transferlab.nets.cnn import small_cnn

    if kind == "cnn":
        return small_cnn(input_shape, channels=(width, 2 * width), hidden=8 * width, out_features=n_classes,
                         instances=instances, generator=generator)
    return mlp(input_shape, [width] * 3, n_classes, instances=instances, generator=generator)


def _resized(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``images (n, C, H, W)`` resized to ``shape = (C, H', W')`` (bilinear, torch's ``interpolate``)."""
    import torch

    if tuple(images.shape[1:]) == tuple(shape):
        return images
    if images.shape[1] != shape[0]:
        raise DataError(f"cannot resize images with {images.shape[1]} channels to {shape[0]}")
    x = torch.nn.functional.interpolate(torch.tensor(images), size=tuple(shape[1:]), mode="bilinear",
                                        align_corners=False)
    return x.clamp(0.0, 1.0).numpy()


def _source_images(zoo: ZooSource, input_shape: tuple[int, ...]) -> Any:
    """The source's data set (labels fine or coarse) with images at ``input_shape``."""
    import dataclasses

    from transferlab.experiments.transfer import _dataset

    data = _dataset(zoo.data, zoo.labels)
    if tuple(data.image_shape) == tuple(input_shape):
        return data
    return dataclasses.replace(data, x_train=_resized(data.x_train, input_shape),
                               x_test=_resized(data.x_test, input_shape))


def _train_own(kind: str, width: int, data_name: str, labels: str, size: int, input_shape: tuple[int, ...],
               tcfg: TransferConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train (or load from the cache) a ``kind``-``width`` network on ``size`` images of ``data_name`` at
    ``input_shape``, with the ``transfer`` kind's source recipe (Adam, batch 128, early stopping on
    min(1000, size / 5) further images; :func:`~transferlab.experiments.transfer._source_settings`)."""
    import dataclasses

    from transferlab.experiments.transfer import _disjoint_subsets, _source_settings, _source_val_size

    sized = tcfg.model_copy(update={"source_size": size})
    settings = _source_settings(sized)
    fields = {"kind": "transferability zoo", "version": TransferabilityExperiment.version, "architecture": kind,
              "width": width, "data": data_name, "labels": labels, "size": size, "input_shape": list(input_shape),
              "settings": dataclasses.asdict(settings), "validation_images": _source_val_size(sized)}
    key = digest(fields)

    def train() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        import torch

        from transferlab.train.loop import evaluate, fit

        started = time.monotonic()
        data = _source_images(ZooSource(kind, data_name, labels, width), input_shape)
        rng = np.random.default_rng(int(key[:15], 16))
        generator = torch.Generator().manual_seed(int(key[15:30], 16))
        train_idx, val_idx = _disjoint_subsets(data.y_train, size, _source_val_size(sized), rng, data.n_classes)
        x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
        net = _network(kind, width, input_shape, data.n_classes, 1, generator)
        record = fit(net, x[train_idx], y[train_idx], settings=settings, generator=generator,
                     val=(x[val_idx], y[val_idx]))
        test = evaluate(net, torch.tensor(data.x_test), torch.tensor(data.y_test))
        facts = {"input_shape": list(input_shape), "n_classes": data.n_classes,
                 "test_accuracy": float(test["accuracy"][0]), "stop_epoch": int(record.stop_epoch[0]),
                 "converged": bool(record.converged[0]), "seconds": round(time.monotonic() - started, 1)}
        return {k: v.detach()[:1].clone() for k, v in net.state_dict().items()}, facts

    return load_or_train(key, train, memory=_LOADED, keep=2)


def zoo_source(cfg: TransferabilityConfig, input_shape: tuple[int, ...], instances: int
               ) -> tuple[BlockNet, dict[str, Any]]:
    """The zoo network of ``cfg.source`` with ``instances`` identical copies, and facts about it
    (``source_test_accuracy`` for trained sources). Defaults are built by the ``transfer`` kind
    (:func:`~transferlab.experiments.transfer.build_source`); width variants and resized data sets here."""
    import torch

    from transferlab.experiments.transfer import build_source

    zoo = parse_source(cfg.source)
    tcfg = _transfer_config(cfg)
    if zoo.kind == "pretrained":
        net, facts = build_source(tcfg, tuple(input_shape), instances)
        return net, {k: v for k, v in facts.items() if k == "source_test_accuracy"}
    size = usable_size(zoo.data, zoo.labels, cfg.source_size)
    tcfg = tcfg.model_copy(update={"source_size": size})
    if not zoo.variant and _source_shape(zoo.data) == tuple(input_shape):
        net, facts = build_source(tcfg, tuple(input_shape), instances)
        return net, {"source_test_accuracy": facts["source_test_accuracy"], "source_images": size}
    state, facts = _train_own(zoo.kind, zoo.width or 0, zoo.data, zoo.labels, size, tuple(input_shape), tcfg)
    net = _network(zoo.kind, zoo.width or 0, tuple(input_shape), facts["n_classes"], instances,
                   torch.Generator().manual_seed(0))
    net.load_state_dict({k: v.expand(instances, *v.shape[1:]).clone() for k, v in state.items()})
    return net, {"source_test_accuracy": facts["test_accuracy"], "source_images": size}


@functools.lru_cache(maxsize=32)
def usable_size(data_name: str, labels: str, size: int) -> int:
    """``size``, or the largest multiple of the class count K below it that the data set can hold. The source
    recipe draws n training images class-balanced (n // K a class, the rest one each to classes with images
    to spare), then min(1000, n / 5) validation images balanced from the remainder. A size that fits in every
    class even rounded up (ceil(n / K) + ceil(val / K) <= the smallest class) is kept as it is; otherwise the
    answer is the largest n = tK whose draw succeeds: with v = min(1000, n // 5), q = v // K and r_c = count_c - t,
    every r_c >= q, sum r_c >= v and at least v mod K classes with r_c > q (which does not depend on the seed).
    Animal-MNIST (800 training images a class) and digits (fewer than 200) hold less than the 10,000 images a
    full spec asks for; those sources (and the CKA reference on their target) train on what there is, and the
    row records it (``source_images``)."""
    from transferlab.experiments.transfer import _SOURCE_VAL, _dataset

    data = _dataset(data_name, labels)
    K = data.n_classes
    counts = np.bincount(data.y_train, minlength=K)
    if -(-size // K) + -(-min(_SOURCE_VAL, size // 5) // K) <= counts.min():
        return size

    def fits(t: int) -> bool:
        v = min(_SOURCE_VAL, t * K // 5)
        rest = counts - t
        return bool(rest.min() >= v // K and rest.sum() >= v and np.count_nonzero(rest > v // K) >= v % K)

    lo, hi = 0, min(size // K, int(counts.min()))  # fits(lo) holds, the answer lies in lo..hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    if lo == 0:
        raise DataError(f"{data_name}: too few images to train a source (class sizes {counts.tolist()})")
    return lo * K


@functools.lru_cache(maxsize=32)
def _source_shape(name: str) -> tuple[int, ...]:
    from transferlab.tasks import load_dataset

    return tuple(load_dataset(name).image_shape)


# --------------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------------


class TransferabilityExperiment(Experiment):
    name = "transferability"
    version = "1"
    Config = TransferabilityConfig
    description = "Transferability predictors against measured transfer on a model zoo; stability; advise validated."

    def batch_key(self, config: TransferabilityConfig) -> Hashable:  # type: ignore[override]
        return config.model_dump_json()  # one cell per task: workers share the cells out

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        return [_run_cell(cell) for cell in cells]

    def analyze(self, table: ResultTable) -> Results:
        return _analyze(table)

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


def _run_cell(cell: Cell) -> dict[str, Any]:
    from transferlab.experiments.transfer import _settings, _target_data, protocol_row

    cfg: TransferabilityConfig = cell.config  # type: ignore[assignment]
    started = time.monotonic()
    if cfg.protocol == "advise":
        return {**_advise_row(cell, cfg), "seconds": round(time.monotonic() - started, 2)}
    tcfg = _transfer_config(cfg)
    data = _target_data(cell, tcfg)
    shape = tuple(data.x_test.shape[1:])
    source, facts = zoo_source(cfg, shape, cfg.instances)
    L = source.n_blocks
    row: dict[str, Any] = {"n_blocks": L, **facts}
    if cfg.protocol == "scores":
        row.update(_scores(cell, cfg, source, data))
    elif cfg.protocol == "freeze_sweep":
        lo = 1 if cfg.max_unfrozen is None else max(1, L - cfg.max_unfrozen)
        errors, unconverged = [], 0
        for k in range(lo, L + 1):
            run = tcfg.model_copy(update={"protocol": "freeze", "k": k})
            out = protocol_row(run, source, data, _settings(run, cfg.n), cell.torch_generator(stream=k))
            errors.append(out["test_error_instances"])
            unconverged += out["unconverged"]
        row.update(k_values=list(range(lo, L + 1)), k_error_instances=errors, unconverged=unconverged,
                   converged=unconverged == 0)
    else:
        run = tcfg.model_copy(update={"protocol": cfg.protocol, "k": None})
        out = protocol_row(run, source, data, _settings(run, cfg.n), cell.torch_generator())
        row.update({k: out[k] for k in ("k", "test_error", "test_error_instances", "unconverged", "converged")})
    row["seconds"] = round(time.monotonic() - started, 2)
    return row


def _scores(cell: Cell, cfg: TransferabilityConfig, source: BlockNet, data: TargetData) -> dict[str, Any]:
    """``score_<predictor>``: one value per instance, or None with ``note_<predictor>`` saying why."""
    import torch

    from transferlab import measures
    from transferlab.protocols.transfer import _features

    zoo = parse_source(cfg.source)
    feats = _features(source, data.x_train, source.n_blocks).flatten(2).double().numpy()  # (I, n, d)
    labels = data.y_train.numpy()
    shape = tuple(data.x_test.shape[1:])
    reference = _reference(cfg, shape)
    per_instance: dict[str, Callable[[int], float]] = {
        "LogME": lambda i: measures.logme_score(feats[i], labels[i]),
        "H-score": lambda i: measures.h_score(feats[i], labels[i], shrinkage="ledoit-wolf"),
        "NLEEP": lambda i: measures.nleep_score(feats[i], labels[i]),
        "GBC": lambda i: measures.gbc_score(feats[i], labels[i]),
        "TransRate": lambda i: measures.transrate_score(feats[i], labels[i]),
        "-overlap": lambda i: -measures.feature_overlap(feats[i], labels[i], task="classification",
                                                        ridge=OVERLAP_RIDGE),
    }
    ref = _reference_features(reference, data.x_train)
    per_instance["CKA"] = lambda i: measures.cka_similarity(feats[i], ref[i])
    notes: dict[str, str] = {}
    if zoo.kind == "pretrained":
        for name in ("LEEP", "NCE"):
            notes[name] = "the packaged pretrained networks ship without their source classifier"
        for name in ("-KL", "-W1", "-MMD"):
            notes[name] = "the pretrained networks' source data (ImageNet) is not installed"
    else:
        with torch.no_grad():
            probs = torch.softmax(source.eval()(data.x_train).double(), -1).numpy()  # (I, n, Z)
        per_instance["LEEP"] = lambda i: measures.leep_score(probs[i], labels[i])
        per_instance["NCE"] = lambda i: measures.nce_score(probs[i], labels[i])
        pixels = _source_pixels(zoo, cfg, shape)
        target_pixels = data.x_train.flatten(2).double().numpy()
        per_instance["-KL"] = lambda i: -measures.gaussian_kl(pixels, target_pixels[i], regularization=KL_SHRINKAGE)
        per_instance["-W1"] = lambda i: -measures.wasserstein_distance(pixels[: target_pixels.shape[1]],
                                                                       target_pixels[i])
        per_instance["-MMD"] = lambda i: -measures.mmd2(pixels, target_pixels[i])
    row: dict[str, Any] = {}
    for name in PREDICTORS:
        if name in notes:
            row[f"score_{name}"], row[f"note_{name}"] = None, notes[name]
            continue
        try:
            row[f"score_{name}"] = [float(per_instance[name](i)) for i in range(cfg.instances)]
        except TransferlabError as err:
            row[f"score_{name}"], row[f"note_{name}"] = None, str(err)
    return row


def _reference(cfg: TransferabilityConfig, shape: tuple[int, ...]) -> BlockNet:
    """The CKA reference: a default CNN trained on ``reference_size`` images of the target (cached)."""
    import torch

    target, labels = _parse_target(cfg.target)
    state, facts = _train_own("cnn", _DEFAULT_WIDTH["cnn"], target, labels,
                              usable_size(target, labels, cfg.reference_size), shape, _transfer_config(cfg))
    net = _network("cnn", _DEFAULT_WIDTH["cnn"], shape, facts["n_classes"], 1, torch.Generator().manual_seed(0))
    net.load_state_dict(state)
    return net


def _reference_features(reference: BlockNet, x: torch.Tensor) -> np.ndarray:
    """Features after the reference's last block of ``x (I, n, *shape)``: ``(I, n, d_ref)``, float64."""
    from transferlab.protocols.transfer import _features

    I = x.shape[0]
    flat = x.reshape(1, -1, *x.shape[2:])
    out = _features(reference, flat, reference.n_blocks).flatten(2).double().numpy()[0]
    return out.reshape(I, x.shape[1], -1)


def _source_pixels(zoo: ZooSource, cfg: TransferabilityConfig, shape: tuple[int, ...]) -> np.ndarray:
    """``divergence_size`` class-balanced source training images at ``shape``, flattened: ``(m, prod(shape))``."""
    from transferlab.tasks.images import class_balanced_indices

    data = _source_images(zoo, shape)
    rng = np.random.default_rng(int(digest({"divergence": zoo.data, "labels": zoo.labels})[:15], 16))
    idx = class_balanced_indices(data.y_train, min(cfg.divergence_size, data.y_train.size), rng,
                                 classes=[str(c) for c in range(data.n_classes)])
    return data.x_train[idx].reshape(idx.size, -1).astype(np.float64)


def _advise_row(cell: Cell, cfg: TransferabilityConfig) -> dict[str, Any]:
    """Run ``transferlab advise`` on this pair at target size n; its k*, k set and decision."""
    from transferlab.advise import advise

    zoo = parse_source(cfg.source)
    target, labels = _parse_target(cfg.target)
    advice = advise(zoo.transfer_source, target, target_size=cfg.n, seed=cell.seed, seeds=cfg.advise_seeds,
                    n_sizes=3, target_labels=labels, architecture=zoo.kind if zoo.kind != "pretrained" else "cnn",
                    source_size=cfg.source_size if zoo.kind == "pretrained"
                    else usable_size(zoo.data, zoo.labels, cfg.source_size),
                    lr=cfg.lr, test_size=cfg.test_size or 1000, steps=cfg.advise_steps)
    return {"n_blocks": advice.n_blocks, "advise_n": advice.target_size, "k_star": advice.k_star,
            "k_star_set": advice.k_star_set, "decision": advice.decision, "gain": advice.gain,
            "gain_ci": list(advice.gain_ci), "converged": advice.sweep["unconverged_runs"] == 0,
            "unconverged": advice.sweep["unconverged_runs"]}


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------

#: The fields of one (source, target, n) pair; protocol varies inside it.
_PAIR = ("source", "target", "n")
#: One ranking problem of the stability analysis: a target, a size, a ground-truth protocol and a seed.
SETUP = ("target", "n", "protocol", "seed")


def _instance_errors(rows: Mapping[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per protocol of one pair: test errors ``(R * I,)`` over replicates and instances; ``freeze_best`` is the
    freeze-k with the lowest mean error (ties: the larger k, fewer blocks trained) and ``k=<k>`` each depth."""
    out: dict[str, np.ndarray] = {}
    for protocol in ("linear_probe", "finetune", "scratch"):
        if protocol in rows:
            out[protocol] = np.concatenate([r["test_error_instances"] for r in rows[protocol]])
    if "finetune" in out:
        out["k=0"] = out["finetune"]
    if "freeze_sweep" in rows:
        sweeps = rows["freeze_sweep"]
        errors = np.concatenate([np.array(r["k_error_instances"], dtype=float) for r in sweeps], axis=1)  # (K, R*I)
        ks = sweeps[0]["k_values"]
        for k, e in zip(ks, errors, strict=True):
            out[f"k={k}"] = e
        best = len(ks) - 1 - int(np.argmin(errors.mean(axis=1)[::-1]))
        out["freeze_best"] = errors[best]
    return out


def _pairs(table: ResultTable) -> dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]]:
    """(source, target, n) -> protocol -> rows (one per replicate), replicates in order."""
    pairs: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    for row in sorted(table.rows, key=lambda r: r.get("replicate", 0)):
        pairs.setdefault(tuple(row[f] for f in _PAIR), {}).setdefault(row["protocol"], []).append(row)
    return pairs


def ranking_rows(table: ResultTable) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The inputs of :mod:`transferlab.measures.ranking` from the stored rows.

    Returns ``(per_seed, means)``: ``per_seed`` has one row per (target, n, ground-truth protocol, seed, source) with
    ``accuracy`` (1 - test error of that seed) and each defined predictor's score on that seed's images (a
    seed is replicate r, instance i: ``seed = r * instances + i``); ``means`` one row per (target, n, protocol,
    source) with the accuracy and every score averaged over seeds. A predictor that is undefined for a source
    (None) is absent from its rows. Protocols: :data:`GROUND_TRUTH` that were run.
    """
    per_seed, means = [], []
    for (source, target, n), rows in _pairs(table).items():
        if "scores" not in rows:
            continue
        scores = {p: np.concatenate([r[f"score_{p}"] for r in rows["scores"]]) for p in PREDICTORS
                  if all(r.get(f"score_{p}") is not None for r in rows["scores"])}
        errors = _instance_errors(rows)
        for protocol in GROUND_TRUTH:
            if protocol not in errors:
                continue
            acc = 1.0 - errors[protocol]
            if acc.size != next(iter(scores.values()), acc).size:
                raise DataError(f"{source} -> {target}, n = {n}: {acc.size} accuracies but "
                                f"{next(iter(scores.values())).size} scores (replicates or instances differ)")
            base = {"target": target, "n": n, "protocol": protocol, "source": source}
            for s in range(acc.size):
                per_seed.append({**base, "seed": s, "accuracy": float(acc[s]),
                                 **{p: float(v[s]) for p, v in scores.items()}})
            means.append({**base, "accuracy": float(acc.mean()), **{p: float(v.mean()) for p, v in scores.items()}})
    return per_seed, means


def _defined(rows: Sequence[Mapping[str, Any]], predictors: Sequence[str]) -> list[Mapping[str, Any]]:
    return [r for r in rows if all(p in r for p in predictors)]


def _correlations(means: list[dict[str, Any]], predictors: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Weighted tau and Pearson per (target, n, protocol) and predictor on the sources the predictor is defined
    for; setups where a statistic is undefined (constant scores or accuracies, < 2 sources) are named in notes."""
    from transferlab.measures.ranking import correlation_table

    out, notes = [], []
    for p in predictors:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in _defined(means, [p]):
            groups.setdefault((r["target"], r["n"], r["protocol"]), []).append(r)
        for rows in groups.values():
            try:
                out.extend(correlation_table(rows, [p], group=("target", "n", "protocol")))
            except DataError as err:
                notes.append(f"{p}: {err}")
    return out, notes


def _stable_setups(rows: list[Mapping[str, Any]], predictors: Sequence[str]
                   ) -> tuple[list[Mapping[str, Any]], list[str], int]:
    """The rows and predictors of a stability report: predictors whose tau is undefined in some setup where the
    accuracies vary (their scores are constant there: e.g. a divergence on sources that share one data set) are
    left out, then setups where a statistic is still undefined (constant accuracies). Returns (rows, predictors
    kept, setups dropped)."""
    from transferlab.measures.ranking import weighted_kendall_tau

    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[g] for g in SETUP), []).append(r)

    def defined(members: list[Mapping[str, Any]], p: str) -> bool:
        try:
            weighted_kendall_tau([m[p] for m in members], [m["accuracy"] for m in members])
        except DataError:
            return False
        return True

    varied = [m for m in groups.values() if len({r["accuracy"] for r in m}) > 1]
    keep = [p for p in predictors if all(defined(m, p) for m in varied)]
    kept = [r for m in varied if all(defined(m, p) for p in keep) for r in m]
    return kept, keep, len(groups) - len({tuple(r[g] for g in SETUP) for r in kept})


def _panel(name: str, per_seed: list[dict[str, Any]], means: list[dict[str, Any]], predictors: Sequence[str]
           ) -> dict[str, Any]:
    """One comparison on the sources where all ``predictors`` are defined: per predictor, the mean weighted tau
    per ground-truth protocol (over targets and sizes, on seed-averaged values), the mean Pearson r, and the
    stability over every (target, n, protocol, seed) variation (mean, SD and quantiles of tau, win fraction)."""
    from transferlab.measures.ranking import stability_report

    m = _defined(means, predictors)
    corr, notes = _correlations(m, predictors)
    kept, stable, dropped = _stable_setups(_defined(per_seed, predictors), predictors)
    report = None
    if stable and len({tuple(r[g] for g in SETUP) for r in kept}) >= 2:
        report = stability_report(kept, stable, group=SETUP)
    rows = []
    for p in predictors:
        mine = [c for c in corr if c["predictor"] == p]
        row: dict[str, Any] = {"predictor": p, "sources": len({r["source"] for r in m})}
        for protocol in GROUND_TRUTH:
            taus = [c["weighted_tau"] for c in mine if c["protocol"] == protocol]
            row[f"tau_w {protocol}"] = float(np.mean(taus)) if taus else None
        row["pearson (mean)"] = float(np.mean([c["pearson"] for c in mine])) if mine else None
        if report is not None and p in report.predictors:
            j = report.predictors.index(p)
            row.update({"tau_w over variations: mean": float(report.mean[j]), "sd": float(report.sd[j]),
                        "q5": float(report.quantiles[0, j]), "q95": float(report.quantiles[-1, j]),
                        "win fraction": float(report.win_fraction[j])})
        rows.append(row)
    if report is not None and len(stable) < len(predictors):
        notes.append(f"left out of the stability report (constant scores in some setup): "
                     f"{', '.join(p for p in predictors if p not in stable)}")
    return {"name": name, "predictors": list(predictors), "table": rows, "correlations": corr, "notes": notes,
            "report": report, "variations": 0 if report is None else len(report.setups), "dropped": dropped,
            "means": m}


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    from transferlab.report.plots import mean_se

    mean, se = mean_se(np.asarray(values, dtype=float))
    return mean, 0.0 if se is None else se


def advisor_validation(table: ResultTable, width: float = 2.0) -> tuple[list[dict[str, Any]], list[str]]:
    """Compare every ``advise`` row with the measured sweep of the same (source, target, n): the oracle.

    The oracle's options are scratch and every k = 0..L (k = 0: ``finetune``; k >= 1: ``freeze_sweep``), each
    with the mean test error over its seeds and SE; its k* is the k of the lowest mean (ties: the larger k), its
    error bars every k with ``e_k - e_k* <= width * sqrt(SE_k^2 + SE_k*^2)``, and its decision ``transfer`` /
    ``scratch`` / ``either`` as the gain ``e_scratch - e_k*`` is above ``width`` SE, below ``-width`` SE, or
    between. The advised action is scratch when advise says ``scratch``, else k* of advise. Regret: the
    measured error of an action minus the lowest measured error of all options (scratch, every k, the linear
    probe); for advise and the fixed policies "always linear probe" and "always fine-tune (k = 0)".

    Returns one row per advised pair and notes on pairs that could not be scored (a k not measured).
    """
    out, notes = [], []
    for (source, target, n), rows in _pairs(table).items():
        if "advise" not in rows:
            continue
        errors = _instance_errors(rows)
        L = rows["advise"][0]["n_blocks"]
        needed = ["scratch", "linear_probe", *(f"k={k}" for k in range(L + 1))]
        if any(k not in errors for k in needed):
            notes.append(f"{source} -> {target}, n = {n}: the measured sweep lacks "
                         f"{', '.join(k for k in needed if k not in errors)}")
            continue
        est = {k: _mean_se(errors[k]) for k in needed}
        ks = {k: est[f"k={k}"] for k in range(L + 1)}
        k_best = min(sorted(ks, reverse=True), key=lambda k: ks[k][0])
        oracle_set = [k for k, (e, se) in ks.items() if e - ks[k_best][0] <= width * math.hypot(se, ks[k_best][1])]
        gain = est["scratch"][0] - ks[k_best][0]
        gain_se = math.hypot(est["scratch"][1], ks[k_best][1])
        oracle_decision = "transfer" if gain > width * gain_se else "scratch" if gain < -width * gain_se else "either"
        best = min(e for e, _ in est.values())
        for adv in rows["advise"]:
            action = "scratch" if adv["decision"] == "scratch" else f"k={adv['k_star']}"
            out.append({
                "source": source, "target": target, "n": n, "replicate": adv.get("replicate", 0), "L": L,
                "advise k*": adv["k_star"], "advise k set": str(adv["k_star_set"]), "advise decision": adv["decision"],
                "oracle k*": k_best, "oracle k set": str(oracle_set), "oracle decision": oracle_decision,
                "k* = oracle": adv["k_star"] == k_best, "k* within oracle bars": adv["k_star"] in oracle_set,
                "decision = oracle": adv["decision"] == oracle_decision,
                "error advised": est[action][0], "error best": best,
                "regret advise": est[action][0] - best, "regret probe": est["linear_probe"][0] - best,
                "regret finetune": est["k=0"][0] - best, "unconverged advise runs": adv["unconverged"],
            })
    return out, notes


def _validation_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy (advise, always probe, always fine-tune): mean regret +- SE over pairs, and advise's hit rates."""
    out = []
    for policy in ("advise", "probe", "finetune"):
        regret = np.array([r[f"regret {policy}"] for r in rows])
        mean, se = _mean_se(regret)
        row: dict[str, Any] = {"policy": {"advise": "transferlab advise", "probe": "always linear probe",
                                          "finetune": "always full fine-tuning"}[policy],
                               "pairs": len(rows), "mean regret (error)": mean, "se": se,
                               "max regret": float(regret.max())}
        if policy == "advise":
            row.update({"k* = oracle k*": float(np.mean([r["k* = oracle"] for r in rows])),
                        "k* within oracle bars": float(np.mean([r["k* within oracle bars"] for r in rows])),
                        "decision = oracle": float(np.mean([r["decision = oracle"] for r in rows]))})
        out.append(row)
    return out


def _analyze(table: ResultTable) -> Results:
    per_seed, means = ranking_rows(table)
    summary: dict[str, Any] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    data: dict[str, Any] = {"means": means}
    unconverged = sum(int(r.get("unconverged", 0)) for r in table.rows)
    summary["cells"] = len(table.rows)
    summary["training runs that did not converge (flagged, kept)"] = unconverged
    panels = []
    if means:
        for name, predictors in (("all sources, feature predictors", FEATURE_PREDICTORS),
                                 ("trained sources, every predictor", PREDICTORS)):
            if not _defined(means, predictors):
                continue
            panel = _panel(name, per_seed, means, predictors)
            panels.append(panel)
            tables[f"predictors ({name})"] = panel["table"]
            summary[f"{name}: sources, variations (dropped)"] = (
                f"{panel['table'][0]['sources']}, {panel['variations']} ({panel['dropped']})")
            if panel["report"] is not None:
                j = int(np.argmax(panel["report"].mean))
                summary[f"{name}: best mean tau_w over variations"] = (
                    f"{panel['report'].predictors[j]} ({panel['report'].mean[j]:+.3f})")
            if panel["notes"]:
                summary[f"{name}: undefined correlations"] = len(panel["notes"])
        # each predictor on every source it is defined for: the feature predictors from the all-sources panel,
        # LEEP, NCE and the divergences from the trained-sources panel
        tables["weighted tau and Pearson per setup"] = [
            c for p in panels for c in p["correlations"]
            if (c["predictor"] in FEATURE_PREDICTORS) == p["name"].startswith("all")]
    validation, notes = advisor_validation(table)
    if validation:
        tables["advise against the measured sweep (per pair)"] = validation
        tables["advise against the measured sweep (summary)"] = _validation_summary(validation)
        best = _validation_summary(validation)[0]
        summary["advise: k* = oracle / within oracle bars / decision = oracle"] = (
            f"{best['k* = oracle k*']:.2f} / {best['k* within oracle bars']:.2f} / {best['decision = oracle']:.2f} "
            f"({best['pairs']} pairs)")
    if notes:
        summary["advise pairs not scored"] = "; ".join(notes)
    accuracy = {r["source"]: r.get("source_test_accuracy") for r in table.rows if r["protocol"] == "scores"}
    tables["source test accuracy"] = [{"source": s, "source test accuracy": a} for s, a in sorted(accuracy.items())]
    data.update(panels=panels, validation=validation)
    return Results(tables=tables, summary=summary, data=data)


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

_PROTOCOL_WORDS = {"linear_probe": "the linear probe", "freeze_best": "the best freeze-k",
                   "finetune": "full fine-tuning"}


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    plan = []
    means = results.data.get("means", [])
    sizes = sorted({r["n"] for r in means})
    for protocol in GROUND_TRUTH:
        rows = [r for r in means if r["protocol"] == protocol and r["n"] == (sizes[-1] if sizes else None)]
        if rows:
            plan.append((f"transferability_scatter_{protocol}",
                         f"Each predictor's score (x) against the measured target accuracy after "
                         f"{_PROTOCOL_WORDS[protocol]} (y) at n = {sizes[-1]} target images, one point per source, one "
                         "colour per target; both averaged over seeds. Larger scores predict better transfer "
                         "(distances and the feature overlap enter negated). Panels of predictors that a source "
                         "lacks (LEEP, NCE: no source classifier; KL, W1, MMD: no source data; both for the "
                         "pretrained networks) show the trained sources only. Scores are not comparable across "
                         "targets: read the order within one colour.",
                         functools.partial(_scatter_figure, rows)))
    for panel in results.data.get("panels", []):
        if panel["report"] is not None:
            slug = "all" if panel["name"].startswith("all") else "trained"
            plan.append((f"transferability_stability_{slug}",
                         f"Stability ({panel['name']}): the weighted Kendall tau between each predictor and the "
                         f"measured accuracy over {panel['variations']} variations of the setup (target, n, "
                         "ground-truth protocol, seed); boxes: quartiles, whiskers: 5 % and 95 % quantiles, "
                         "diamond: mean. Right: the fraction of variations each predictor wins (ties share). "
                         "Agostinelli et al. (2022) found the winner of such comparisons to change with the setup.",
                         functools.partial(_stability_figure, panel)))
    if results.data.get("validation"):
        plan.append(("transferability_advise_regret",
                     "Regret in test error (the measured error of the chosen action minus the lowest measured error "
                     "of scratch, every k and the linear probe) of transferlab advise and of two fixed policies, per "
                     "held-out (source, target) pair; bars: mean over pairs.",
                     functools.partial(_regret_figure, results.data["validation"])))
    return plan


def _scatter_figure(rows: list[dict[str, Any]]) -> Figure:
    from matplotlib.figure import Figure

    predictors = [p for p in PREDICTORS if any(p in r for r in rows)]
    cols = 4
    fig = Figure(figsize=(12, 2.6 * math.ceil(len(predictors) / cols) + 0.6))
    axes = fig.subplots(math.ceil(len(predictors) / cols), cols, squeeze=False)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    for ax, p in zip(axes.flat, predictors):
        for i, t in enumerate(targets):
            pts = [r for r in rows if r["target"] == t and p in r]
            ax.plot([r[p] for r in pts], [r["accuracy"] for r in pts], "o", color=f"C{i}", ms=4,
                    label=t if p == predictors[0] else None)
        ax.set_title(p, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(predictors):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("target accuracy", fontsize=8)
    fig.legend(loc="lower center", ncol=len(targets), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _stability_figure(panel: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    report = panel["report"]
    fig = Figure(figsize=(10, 3.8))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]})
    values = report.values  # (S, P)
    ax.boxplot([values[:, j] for j in range(values.shape[1])], whis=(5, 95), showfliers=False)
    ax.plot(np.arange(1, values.shape[1] + 1), report.mean, "D", color="C3", ms=5)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(1, values.shape[1] + 1), report.predictors, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("weighted Kendall tau")
    ax.set_title(panel["name"], fontsize=9)
    ax2.barh(np.arange(values.shape[1]), report.win_fraction, color="C0")
    ax2.set_yticks(np.arange(values.shape[1]), report.predictors, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("fraction of variations won")
    fig.tight_layout()
    return fig


def _regret_figure(rows: list[dict[str, Any]]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    policies = (("advise", "advise"), ("probe", "always probe"), ("finetune", "always fine-tune"))
    for i, (key, label) in enumerate(policies):
        regret = np.array([r[f"regret {key}"] for r in rows])
        ax.bar(i, regret.mean(), color=f"C{i}", alpha=0.5)
        ax.plot(np.full(regret.size, i) + np.linspace(-0.2, 0.2, regret.size), regret, "o", color=f"C{i}", ms=4)
    ax.set_xticks(range(len(policies)), [p[1] for p in policies])
    ax.set_ylabel("regret (test error above the best option)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# tables as files
# --------------------------------------------------------------------------------------------------


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub markdown table of ``rows`` (union of keys as columns; floats to 3 decimals, missing as blank)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_tables(store: Any, out_dir: Any) -> list[Any]:
    """Write every table of the analysis of ``store`` (a ``transferability`` store) as CSV under ``out_dir``
    (``transferability_<table>.csv``) and the predictor and advisor tables as markdown
    (``transferability_tables.md``). Returns the paths written."""
    from pathlib import Path

    from transferlab.report.html import table_csv
    from transferlab.sweep import load_table

    experiment, table = load_table(store)
    if experiment.name != TransferabilityExperiment.name:
        raise ConfigError(f"{store} holds the {experiment.name!r} experiment, not {TransferabilityExperiment.name!r}")
    results = experiment.analyze(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, sections = [], []
    for name, rows in results.tables.items():
        slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
        path = out / f"transferability_{slug}.csv"
        path.write_text(table_csv(rows), encoding="utf-8")
        paths.append(path)
        if rows and not name.startswith(("weighted tau", "source test")):
            sections.append(f"## {name}\n\n{_markdown(rows)}")
    md = out / "transferability_tables.md"
    md.write_text("# Transferability benchmark\n\n" + "\n".join(sections), encoding="utf-8")
    return [*paths, md]
