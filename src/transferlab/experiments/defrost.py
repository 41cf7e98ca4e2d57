"""``defrost``: how deep to transfer between correlated hidden-manifold tasks (Gerace et al. 2023).

One cell is one (q, n_t, protocol, k, reinit_unfrozen) with ``instances`` seeds, on a source/target pair of
hidden-manifold tasks (:func:`transferlab.tasks.correlated_pair`, correlation q; docs/models/hidden_manifold.md).
The scratch, finetune and freeze cells of one (q, n_t) -- every k, both ``reinit_unfrozen`` settings and
every replicate of a sweep, all else equal -- share a batch key and train as ONE stacked network
(:func:`_run_stacked`): each cell's row equals the one it gets alone up to float rounding. Defrosting,
the probe and the layerwise analysis run cell by cell, each cell's instances as one batched program.

Tasks and seeding. The pair is drawn from a generator seeded by (spec seed, replicate, D, N, the task's
nonlinearity) -- deliberately *not* by q: :func:`correlated_pair` draws the source first and the
perturbation directions next, so every q of a replicate shares one source task, one source network and
the same perturbation directions (common random numbers across q), and every cell of a (q, replicate)
shares the pair. The source network, an MLP of ``depth`` blocks of ``width`` units (``activation``
relu or tanh) with a 2-class head, is trained once per (seed, replicate, task and training fields) on
``n_source`` source samples (Adam, batch 128, early stopping on min(1000, n_source / 5) more) and cached
on disk like the ``transfer`` kind's trained sources (:mod:`transferlab.experiments._source_cache`).
Instance i of a replicate draws its own ``n_t`` target training samples and ``val_size`` validation
samples (early stopping only) from a generator seeded by (spec seed, replicate, task fields, n_t,
val_size, i): every protocol and k sees the same samples (paired comparisons). All cells of a
(q, replicate) are tested on one shared set of ``test_size`` target samples.

Protocols (:mod:`transferlab.protocols.transfer`): ``scratch``, ``finetune`` (k = 0), ``freeze``
(blocks 1..k frozen at the source, k in 0..depth; ``reinit_unfrozen`` redraws blocks k+1..depth),
``defrost`` (incremental defrosting, stages k = depth..0), ``linear_probe`` (convex probe on the
frozen features after the last block) and ``layerwise``: no target training at small n_t, but the
representation analysis of Gerace et al. (2023): the source network (trained from scratch on the
source) and a *target-scratch* network of the same architecture trained the same way on ``n_source``
target samples (cached too) are compared block by block on ``probe_size`` common target test inputs,
with linear CKA, the k-NN neighbourhood overlap (``knn_k``), the information imbalance in both
directions and the TwoNN intrinsic dimension of each (:func:`layerwise_measures`).

Rows: ``test_error`` (mean over instances), ``test_error_instances``, ``test_loss``, ``k`` (blocks
frozen; depth for the probe, 0 for scratch / finetune / the last defrost stage), ``n_blocks``,
``converged`` / ``unconverged`` / ``stop_epoch_instances`` as in the ``transfer`` kind,
``source_test_error``; ``stage_k`` / ``stage_error`` for defrosting; for ``layerwise``: ``cka``,
``knn_overlap``, ``ii_source_to_target``, ``ii_target_to_source``, ``twonn_source``,
``twonn_target`` (one value per block 1..depth) and ``test_error`` = the target-scratch network's.

:meth:`DefrostExperiment.analyze` gives, per (n_t, q), the error against k with standard errors over
instances x replicates, k* (the best number of frozen blocks, fine-tuning counted as k = 0), the
transferability (scratch error minus the best transfer that keeps source weights), and how far
head-only transfer (the better of freeze k = depth and the probe) is above k*'s error, in paired standard
errors; from ``layerwise`` rows, the depth where mean CKA first falls below :data:`CKA_DROP_THRESHOLD`,
set against k* with a Spearman rank correlation over the (q, n_t) settings when there are at least
:data:`MIN_SPEARMAN_POINTS` of them and neither side is constant.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from transferlab.errors import ConfigError
from transferlab.experiments._source_cache import digest, load_or_train
from transferlab.experiments.base import Cell, Experiment, Results, ResultTable
from transferlab.experiments.transfer import TargetTrainingConfig, _settings, pooled_error, protocol_row, run_fields

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from transferlab.nets.blocks import BlockNet
    from transferlab.protocols.transfer import TargetData
    from transferlab.tasks.hidden_manifold import HiddenManifoldPair

__all__ = ["CKA_DROP_THRESHOLD", "MIN_SPEARMAN_POINTS", "DefrostConfig", "DefrostExperiment", "layerwise_measures"]

Protocol = Literal["scratch", "freeze", "finetune", "defrost", "linear_probe", "layerwise"]

#: The similarity-drop depth is the first block whose mean linear CKA (source-scratch vs target-scratch
#: network) is below this. Our choice: Gerace et al. read the drop off their curves; no number was recovered.
CKA_DROP_THRESHOLD = 0.9
#: Fewest (q, n_t) settings for which the Spearman correlation of drop depth and k* is reported.
MIN_SPEARMAN_POINTS = 4
#: Source (and target-scratch reference) training: Adam, batch 128, early stopping with this patience
#: (epochs) on min(1000, n_source / 5) further samples; test error on this many fresh samples.
_SOURCE_BATCH, _SOURCE_VAL, _SOURCE_PATIENCE, _SOURCE_TEST = 128, 1000, 3, 2000


class DefrostConfig(TargetTrainingConfig):
    """One cell of the ``defrost`` experiment (see the module docstring)."""

    q: float = Field(ge=0.0, le=1.0, description="source-target correlation (rho_F = rho_theta = q)")
    D: int = Field(100, ge=2, description="latent (hidden-manifold) dimension")
    N: int = Field(500, ge=1, description="input dimension")
    delta_D_max: int = Field(0, description="latent features added (> 0) or deleted (< 0) at q = 0")
    task_activation: Literal["tanh", "sign", "relu", "erf"] = Field("tanh", description="phi of x = phi(F^T c / sqrt D)")
    n_t: int | None = Field(None, ge=2, description="target training samples per instance (not for layerwise)")
    protocol: Protocol = "freeze"
    instances: int = Field(5, ge=1, description="seeds trained together, each with its own target samples")
    depth: int = Field(4, ge=1, description="hidden layers (blocks) L of the MLP")
    width: int = Field(256, ge=1, description="units per hidden layer")
    activation: Literal["relu", "tanh"] = "relu"
    n_source: int = Field(10000, ge=10, description="source samples (and target samples of the layerwise reference)")
    source_epochs: int = Field(30, ge=1, description="most epochs of source training")
    test_size: int = Field(2000, ge=10, description="shared target test samples")
    probe_size: int = Field(1000, ge=20, description="layerwise: common probe inputs (target test samples)")
    knn_k: int = Field(10, ge=1, description="layerwise: neighbours of the k-NN overlap")

    @model_validator(mode="after")
    def _consistent(self) -> DefrostConfig:
        if self.k is not None and self.k > self.depth:
            raise ValueError(f"k = {self.k} is out of range: the network has depth = {self.depth} blocks (k in 0..depth)")
        if self.protocol == "layerwise" and self.n_t is not None:
            raise ValueError("protocol 'layerwise' trains no small-n_t target network: drop n_t")
        if self.protocol != "layerwise" and self.n_t is None:
            raise ValueError(f"protocol {self.protocol!r} needs n_t (target training samples)")
        if self.protocol == "layerwise" and self.probe_size > self.test_size:
            raise ValueError(f"probe_size = {self.probe_size} exceeds test_size = {self.test_size} (the probes are test inputs)")
        if self.protocol == "layerwise" and self.knn_k >= self.probe_size:
            raise ValueError(f"knn_k = {self.knn_k} must be below probe_size = {self.probe_size}")
        if self.D + self.delta_D_max < 2:
            raise ValueError(f"D + delta_D_max = {self.D + self.delta_D_max}: the target needs >= 2 latent dimensions")
        return self


class DefrostExperiment(Experiment):
    name = "defrost"
    version = "1"
    Config = DefrostConfig
    description = "Correlated hidden-manifold tasks: freeze-k, defrosting, scratch, probe; layerwise CKA/NO/II/ID."

    def batch_key(self, config: DefrostConfig) -> Hashable:  # type: ignore[override]
        # scratch / finetune / freeze cells that differ only in (protocol, k, reinit_unfrozen) train as one
        # stack (_run_stacked); every other cell is one batched program of its own instances
        if config.protocol in _STACKED:
            return ("stacked", config.model_dump_json(exclude={"protocol", "k", "reinit_unfrozen"}))
        return ("cell", config.model_dump_json())

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        stacked = [c for c in cells if c.config.protocol in _STACKED]  # type: ignore[attr-defined]
        rows = dict(zip((id(c) for c in stacked), _run_stacked(stacked), strict=True)) if stacked else {}
        return [rows[id(c)] if id(c) in rows else _run_cell(c) for c in cells]

    def analyze(self, table: ResultTable) -> Results:
        """Per setting (everything but q, n_t, protocol, k): the error against k per (n_t, q), k*, the
        transferability, head-only against k*, and the layerwise similarity set against k*."""
        settings = [_analyze_setting(dict(zip(_SETTING_FIELDS, key, strict=True)), rows)
                    for key, rows in table.group_by(*_SETTING_FIELDS).items()]
        for i, s in enumerate(settings):
            s["label"] = s["label"] if len(settings) > 1 else ""
            s["slug"] = f"_{i}" if len(settings) > 1 else ""
        unconverged = sum(not r["converged"] for r in table.rows)
        summary: dict[str, Any] = {
            "settings (architecture, task, training)": len(settings),
            "cells whose training did not converge (flagged, kept)": f"{unconverged} of {len(table.rows)}",
        }
        tables: dict[str, list[dict[str, Any]]] = {}
        for s in settings:
            prefix = f"{s['label']}: " if s["label"] else ""
            for row in s["best"]:
                key = f"{prefix}q = {row['q']:g}, n_t = {row['n_t']}"
                text = f"k* = {row['k_star']} of {s['n_blocks']}"
                if row["head_margin"] is not None:
                    text += (f"; head-only {row['head_error']:.3f} vs k* {row['k_star_error']:.3f}: "
                             f"{row['head_margin']:+.3f} ({_se_text(row['head_margin_in_se'])})")
                if row["transferability"] is not None:
                    text += f"; transferability {row['transferability']:+.3f} ({row['best_protocol']})"
                summary[key] = text
            if s["layerwise"]:
                lw = s["layerwise"]
                summary[f"{prefix}CKA drop depth (first block with CKA < {CKA_DROP_THRESHOLD})"] = ", ".join(
                    f"q = {q:g}: {d['drop_depth'] if d['drop_depth'] is not None else 'none'}"
                    for q, d in sorted(lw["by_q"].items()))
                summary[f"{prefix}Spearman(drop depth - 1, k*)"] = (
                    f"{lw['spearman']:+.2f} over {lw['spearman_points']} (q, n_t) settings"
                    if lw["spearman"] is not None else lw["spearman_note"])
                tables[f"{prefix}layerwise similarity"] = lw["table"]
            tables[f"{prefix}error by protocol"] = s["table"]
            tables[f"{prefix}k*, transferability, head-only"] = s["best"]
        return Results(tables=tables, summary=summary, data={"settings": settings})

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


# --------------------------------------------------------------------------------------------------
# tasks, data, networks
# --------------------------------------------------------------------------------------------------


def _seq(cell: Cell, cfg: DefrostConfig, role: str, **extra: Any) -> np.random.SeedSequence:
    """A seed sequence from (spec seed, replicate, the task's fields, role, extra) only (never q)."""
    fields = {"D": cfg.D, "N": cfg.N, "phi": cfg.task_activation, "role": role, **extra}
    return np.random.SeedSequence([cell.seed, cell.replicate, *(int(c, 16) for c in digest(fields)[:32])])


def _pair(cell: Cell, cfg: DefrostConfig) -> HiddenManifoldPair:
    from transferlab.tasks import correlated_pair

    rng = np.random.default_rng(_seq(cell, cfg, "pair"))
    return correlated_pair(cfg.D, cfg.N, cfg.q, generator=rng, delta_D_max=cfg.delta_D_max,
                           activation=cfg.task_activation)


def _draw(task: Any, n: int, seq: np.random.SeedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    from transferlab.tasks import hidden_manifold_data

    return hidden_manifold_data(task, n, np.random.default_rng(seq))  # type: ignore[return-value]


def _network(cfg: DefrostConfig, instances: int, generator: torch.Generator) -> BlockNet:
    from transferlab.nets import mlp

    return mlp((cfg.N,), [cfg.width] * cfg.depth, 2, instances=instances, activation=cfg.activation,
               generator=generator)


def _reference_settings(cfg: DefrostConfig) -> Any:
    from transferlab.train.loop import TrainSettings

    return TrainSettings(optimizer="adam", lr=cfg.source_lr, batch_size=_SOURCE_BATCH, max_epochs=cfg.source_epochs,
                         patience=_SOURCE_PATIENCE)


def _reference_fields(cell: Cell, cfg: DefrostConfig, role: str) -> dict[str, Any]:
    """Everything that determines a trained reference network (its cache key)."""
    fields = {"kind": DefrostExperiment.name, "kind_version": DefrostExperiment.version, "role": role,
              "seed": cell.seed, "replicate": cell.replicate,
              **{f: getattr(cfg, f) for f in ("D", "N", "task_activation", "n_source", "depth", "width", "activation")},
              "settings": dataclasses.asdict(_reference_settings(cfg)),
              "validation": min(_SOURCE_VAL, cfg.n_source // 5), "test": _SOURCE_TEST}
    if role == "target":  # the target task depends on q and delta_D_max; the source task does not
        fields.update(q=cfg.q, delta_D_max=cfg.delta_D_max)
    return fields


#: Reference networks already loaded in this process, by digest (the source and a target reference).
_LOADED: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}


def _reference(cell: Cell, cfg: DefrostConfig, pair: HiddenManifoldPair, role: str
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The one-instance state and facts of the network trained from scratch on ``n_source`` samples of the
    source task (``role="source"``) or the target task (``"target"``): memory, disk cache, or trained now."""
    key = digest(_reference_fields(cell, cfg, role))
    return load_or_train(key, lambda: _train_reference(cell, cfg, pair, role, key), memory=_LOADED, keep=2)


def _train_reference(cell: Cell, cfg: DefrostConfig, pair: HiddenManifoldPair, role: str, key: str
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    from transferlab.train.loop import evaluate, fit

    started = time.monotonic()
    task = pair.source if role == "source" else pair.target
    n_val = min(_SOURCE_VAL, cfg.n_source // 5)
    x, y = _draw(task, cfg.n_source + n_val, _seq(cell, cfg, f"{role} data", q=None if role == "source" else cfg.q))
    x_test, y_test = _draw(task, _SOURCE_TEST, _seq(cell, cfg, f"{role} test", q=None if role == "source" else cfg.q))
    generator = torch.Generator().manual_seed(int(key[:15], 16))
    net = _network(cfg, 1, generator)
    record = fit(net, x[: cfg.n_source], y[: cfg.n_source], settings=_reference_settings(cfg), generator=generator,
                 val=(x[cfg.n_source :], y[cfg.n_source :]))
    test = evaluate(net, x_test, y_test)
    facts = {"role": role, "test_error": float(test["error"][0]), "stop_epoch": int(record.stop_epoch[0]),
             "converged": bool(record.converged[0] & record.improved[0]),
             "seconds": round(time.monotonic() - started, 2)}
    return {k: v.detach()[:1].clone() for k, v in net.state_dict().items()}, facts


def _load(cfg: DefrostConfig, state: dict[str, torch.Tensor], instances: int) -> BlockNet:
    import torch

    net = _network(cfg, instances, torch.Generator().manual_seed(0))  # the draw is overwritten
    net.load_state_dict({k: v.expand(instances, *v.shape[1:]).clone() for k, v in state.items()})
    return net


def _test_set(cell: Cell, cfg: DefrostConfig, pair: HiddenManifoldPair) -> tuple[torch.Tensor, torch.Tensor]:
    """The target test samples shared by every cell of a (q, replicate) (common latents across q)."""
    return _draw(pair.target, cfg.test_size, _seq(cell, cfg, "target test", size=cfg.test_size))


def _target_data(cell: Cell, cfg: DefrostConfig, pair: HiddenManifoldPair) -> TargetData:
    """Per instance i: n_t training and val_size validation samples from a generator seeded by (seed,
    replicate, task fields, n_t, val_size, i): the same samples for every protocol and k."""
    import torch

    from transferlab.protocols.transfer import TargetData

    assert cfg.n_t is not None
    draws = [_draw(pair.target, cfg.n_t + cfg.val_size,
                   _seq(cell, cfg, "target train", n_t=cfg.n_t, val=cfg.val_size, instance=i))
             for i in range(cfg.instances)]
    x = torch.stack([d[0] for d in draws])
    y = torch.stack([d[1] for d in draws])
    x_test, y_test = _test_set(cell, cfg, pair)
    val = {"x_val": x[:, cfg.n_t :], "y_val": y[:, cfg.n_t :]} if cfg.val_size else {}
    return TargetData(x_train=x[:, : cfg.n_t], y_train=y[:, : cfg.n_t], x_test=x_test, y_test=y_test, n_classes=2,
                      **val)


# --------------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------------


def _run_cell(cell: Cell) -> dict[str, Any]:
    cfg: DefrostConfig = cell.config  # type: ignore[assignment]
    pair = _pair(cell, cfg)
    state, facts = _reference(cell, cfg, pair, "source")
    if cfg.protocol == "layerwise":
        return _layerwise_row(cell, cfg, pair, state, facts)
    data = _target_data(cell, cfg, pair)
    source = _load(cfg, state, cfg.instances)
    settings = _settings(cfg, cfg.n_t)  # the transfer kind's step budgets -> epochs (same field names)
    return {"n_blocks": cfg.depth, "source_test_error": facts["test_error"],
            **protocol_row(cfg, source, data, settings, cell.torch_generator())}


#: Protocols whose cells of one (q, n_t, setting) train as one stacked network (:func:`_run_stacked`).
_STACKED = ("scratch", "finetune", "freeze")


def _frozen_depth(cfg: DefrostConfig) -> int:
    """Blocks a scratch / finetune / freeze cell keeps frozen (0 but for freeze)."""
    return (cfg.k or 0) if cfg.protocol == "freeze" else 0


def _run_stacked(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Rows of scratch / finetune / freeze cells that differ only in (protocol, k, reinit_unfrozen) and
    the replicate, trained as ONE network whose instance axis stacks every cell's instances.

    Each cell's network is built exactly as :func:`_run_cell` builds it (:func:`transfer_net` from its own
    replicate's source with its own generator: redrawn blocks, then the new head), the networks are
    stacked in order of frozen depth (:func:`stack_instances`), and one :func:`fit` trains them with
    per-cell permutation groups (each cell's instances get the permutations its own generator draws
    alone) and per-instance frozen blocks (instance i of a cell freezing k keeps blocks 1..k; fit's staged
    forward caches each instance's frozen prefix, so the stack does the FLOPs of the cells run apart).
    Early stopping and the kept weights are per instance, so each cell's result is the one it gets alone,
    up to float rounding (stacked matmuls over other instance counts; the frozen features computed by
    the stack, not per cell; tests/defrost/test_batched.py bounds it), and does not depend on which
    other cells share the stack or their order. One cell alone is exactly :func:`_run_cell`.
    """
    import torch

    from transferlab.nets.blocks import stack_instances
    from transferlab.protocols.transfer import _features, transfer_net
    from transferlab.train.loop import evaluate, fit

    depths = [_frozen_depth(c.config) for c in cells]  # type: ignore[arg-type]
    if depths != sorted(depths):  # ordered by frozen depth (stable), so fit's staged forward applies
        order = sorted(range(len(cells)), key=lambda i: depths[i])
        rows = _run_stacked([cells[i] for i in order])
        return [rows[order.index(i)] for i in range(len(cells))]
    first: DefrostConfig = cells[0].config  # type: ignore[assignment]
    common = first.model_dump(exclude={"protocol", "k", "reinit_unfrozen"})
    replicates: dict[tuple[int, int], tuple[TargetData, dict[str, torch.Tensor], dict[str, Any]]] = {}
    nets, groups, frozen, parts = [], [], [], []
    for cell in cells:
        cfg: DefrostConfig = cell.config  # type: ignore[assignment]
        if cfg.protocol not in _STACKED or cfg.model_dump(exclude={"protocol", "k", "reinit_unfrozen"}) != common:
            raise ConfigError(f"cell {cell.key[:12]} cannot share a stack with cell {cells[0].key[:12]}: only "
                              f"{', '.join(_STACKED)} cells differing in protocol, k and reinit_unfrozen stack")
        if (cell.seed, cell.replicate) not in replicates:
            pair = _pair(cell, cfg)
            state, facts = _reference(cell, cfg, pair, "source")
            replicates[(cell.seed, cell.replicate)] = (_target_data(cell, cfg, pair), state, facts)
        data, state, _ = replicates[(cell.seed, cell.replicate)]
        k = _frozen_depth(cfg)
        generator = cell.torch_generator()
        nets.append(transfer_net(_load(cfg, state, cfg.instances), k, data.out_features,
                                 reinit_unfrozen=cfg.protocol == "scratch" or cfg.reinit_unfrozen, generator=generator))
        groups.append((generator, cfg.instances))
        frozen += [k] * cfg.instances
        parts.append(data)
    net = stack_instances(nets)
    k_min = min(frozen)
    net.freeze_first(k_min)

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        xs = [getattr(d, f"x_{name}") for d in parts]
        if xs[0] is None:
            return None
        ys = [getattr(d, f"y_{name}") for d in parts]
        shared = xs[0].ndim == len(net.input_shape) + 1 and ys[0].ndim == 1
        if shared and all(x is xs[0] for x in xs) and all(y is ys[0] for y in ys):
            return _features(net, xs[0], k_min), ys[0]  # one replicate's test set, shared by every instance
        per = [(net_.batch_input(x), y.expand(net_.instances, *y.shape[-1:]))
               for net_, x, y in zip(nets, xs, ys, strict=True)]
        return _features(net, torch.cat([x for x, _ in per]), k_min), torch.cat([y for _, y in per])

    settings = _settings(first, first.n_t)  # equal for every cell of the stack (same fields)
    train, val, test = split("train"), split("val"), split("test")
    assert train is not None and test is not None
    record = fit(net, *train, settings=settings, generator=groups, val=val, start_block=k_min, frozen_blocks=frozen)
    metrics = evaluate(net, *test, loss=parts[0].loss, start_block=k_min)
    # the fields protocol_row gives a single run (run_fields; a run is unconverged when its trainer says so or
    # when validation never beat its initial weights)
    bad = (~record.converged | ~record.improved).tolist()
    errors, stops = metrics["error"].double().numpy(), record.stop_epoch.tolist()
    rows, start = [], 0
    for cell, (_, count) in zip(cells, groups, strict=True):
        own = slice(start, start + count)
        start += count
        facts = replicates[(cell.seed, cell.replicate)][2]
        rows.append({"n_blocks": first.depth, "source_test_error": facts["test_error"],
                     **run_fields(frozen[own.start], errors[own], float(metrics["loss"][own].mean()),
                                  int(sum(bad[own])), [int(e) for e in stops[own]])})
    return rows


def layerwise_measures(net_a: BlockNet, net_b: BlockNet, x: torch.Tensor, *, knn_k: int = 10,
                       instance: int = 0) -> dict[str, list[float]]:
    """Block-by-block comparison of two networks on common probe inputs ``x`` of shape (n, *input_shape).

    For every block l = 1..L of both networks (equal depth), the features f_l(x) of instance ``instance``,
    flattened to (n, width_l), give (each list has L entries):

    - ``cka``: linear CKA (:func:`transferlab.measures.cka_similarity`, biased HSIC), 1 for equal features;
    - ``knn_overlap``: the fraction of shared ``knn_k`` nearest neighbours (Doimo et al. 2020);
    - ``ii_source_to_target``, ``ii_target_to_source``: information imbalance Delta(a -> b), Delta(b -> a)
      (Glielmo et al. 2022; near 0: the first predicts the second's neighbourhoods, near 1: no information);
    - ``twonn_source``, ``twonn_target``: TwoNN intrinsic dimension of each (Facco et al. 2017).

    ("source" names ``net_a``, "target" ``net_b``.)

    Raises:
        DataError: the networks differ in depth, or a layer's features are degenerate (all rows equal).
    """
    import torch

    from transferlab import measures as tm
    from transferlab.errors import DataError
    from transferlab.protocols.transfer import _features

    if net_a.n_blocks != net_b.n_blocks:
        raise DataError(f"the networks differ in depth ({net_a.n_blocks} and {net_b.n_blocks} blocks)")
    out: dict[str, list[float]] = {name: [] for name in (
        "cka", "knn_overlap", "ii_source_to_target", "ii_target_to_source", "twonn_source", "twonn_target")}
    with torch.no_grad():
        for block in range(1, net_a.n_blocks + 1):
            a = _features(net_a, x, block)[instance].flatten(1).double().numpy()
            b = _features(net_b, x, block)[instance].flatten(1).double().numpy()
            out["cka"].append(float(tm.cka_similarity(a, b)))
            out["knn_overlap"].append(float(tm.knn_overlap(a, b, k=knn_k)))
            forward, backward = tm.information_imbalance(a, b)
            out["ii_source_to_target"].append(float(forward))
            out["ii_target_to_source"].append(float(backward))
            out["twonn_source"].append(float(tm.twonn_dimension(a)))
            out["twonn_target"].append(float(tm.twonn_dimension(b)))
    return out


def _layerwise_row(cell: Cell, cfg: DefrostConfig, pair: HiddenManifoldPair, state: dict[str, torch.Tensor],
                   facts: dict[str, Any]) -> dict[str, Any]:
    target_state, target_facts = _reference(cell, cfg, pair, "target")
    x_test, _ = _test_set(cell, cfg, pair)
    measures = layerwise_measures(_load(cfg, state, 1), _load(cfg, target_state, 1), x_test[: cfg.probe_size],
                                  knn_k=cfg.knn_k)
    unconverged = int(not facts["converged"]) + int(not target_facts["converged"])
    return {"n_blocks": cfg.depth, "source_test_error": facts["test_error"], "k": None,
            "test_error": target_facts["test_error"], "test_error_instances": [target_facts["test_error"]],
            "converged": unconverged == 0, "unconverged": unconverged, **measures}


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------

#: Fields that define one setting; q, n_t, protocol, k and reinit_unfrozen vary inside it (and the
#: per-protocol knobs instances, probe_size and knn_k do not split it).
_SETTING_FIELDS = tuple(f for f in DefrostConfig.model_fields
                        if f not in ("q", "n_t", "protocol", "k", "reinit_unfrozen", "instances", "probe_size", "knn_k"))
_LAYERWISE_KEYS = ("cka", "knn_overlap", "ii_source_to_target", "ii_target_to_source", "twonn_source", "twonn_target")


def _by_run(rows: list[dict[str, Any]]) -> dict[tuple[int, int], float]:
    """Per-run test errors keyed by (replicate, instance): runs with equal keys saw the same target samples."""
    return {(int(r.get("replicate", 0)), i): float(e) for r in rows for i, e in enumerate(r["test_error_instances"])}


def paired_difference(a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]
                      ) -> tuple[float, float | None, int]:
    """Mean and standard error of a - b over the runs both hold (same replicate and instance, so the same
    target samples): (mean, SE or None for fewer than 2 runs, runs)."""
    from transferlab.report.plots import mean_se

    common = sorted(set(a) & set(b))
    if not common:
        return math.nan, None, 0
    mean, se = mean_se(np.array([a[c] - b[c] for c in common]))
    return mean, se, len(common)


def _se_text(in_se: float | None) -> str:
    if in_se is None:
        return "no standard error"
    return f"{in_se:+.1f} SE" if math.isfinite(in_se) else "every paired run equal"


def _analyze_setting(setting: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    L = int(setting["depth"])
    transfer_rows = [r for r in rows if r["protocol"] != "layerwise"]
    table, best, curves, defrost = [], [], {}, {}
    for (q, n_t), at in sorted(ResultTable(transfer_rows).group_by("q", "n_t").items()):
        entries: dict[tuple[str, int, bool], tuple[float, float | None, int]] = {}
        runs: dict[tuple[str, int, bool], dict[tuple[int, int], float]] = {}
        for (protocol, _, reinit), group in ResultTable(at).group_by("protocol", "k", "reinit_unfrozen").items():
            k = int(group[0]["k"])
            # fine-tuning is freeze k = 0 with kept weights: one curve point
            key = ("freeze" if protocol == "finetune" else protocol, k, bool(reinit))
            mean, se, count = pooled_error(group)
            entries[key] = (mean, se, count)
            runs[key] = _by_run(group)
            table.append({"q": q, "n_t": n_t, "protocol": protocol, "k": k, "reinit_unfrozen": reinit,
                          "test_error": mean, "se": se, "runs": count,
                          "unconverged runs": sum(r["unconverged"] for r in group)})
            if protocol == "defrost":
                stages = np.array([r["stage_error"] for r in group], dtype=float)
                defrost[(q, n_t)] = (group[0]["stage_k"], stages.mean(0))
        kept = sorted((k, *v) for (p, k, r), v in entries.items() if p == "freeze" and not r)
        curves[(q, n_t)] = {"kept": kept,
                            "reinit": sorted((k, *v) for (p, k, r), v in entries.items() if p == "freeze" and r),
                            "scratch": entries.get(("scratch", 0, False)),
                            "probe": entries.get(("linear_probe", L, False))}
        row: dict[str, Any] = {"q": q, "n_t": n_t, "k_star": None, "k_star_error": None, "head_error": None,
                               "head_protocol": None, "head_margin": None, "head_margin_se": None,
                               "head_margin_in_se": None, "scratch_error": None, "best_error": None,
                               "best_protocol": None, "transferability": None, "transferability_se": None}
        if kept:
            k_star, k_err, _, _ = min(kept, key=lambda c: c[1])
            row.update(k_star=k_star, k_star_error=k_err)
            heads = {name: key for name, key in (("freeze k=L", ("freeze", L, False)),
                                                 ("linear_probe", ("linear_probe", L, False))) if key in entries}
            if heads:
                name, key = min(heads.items(), key=lambda kv: entries[kv[1]][0])
                margin, se, _ = paired_difference(runs[key], runs[("freeze", k_star, False)])
                in_se = None if se is None else (margin / se if se > 0 else (0.0 if margin == 0 else math.inf))
                row.update(head_error=entries[key][0], head_protocol=name,
                           head_margin=entries[key][0] - k_err, head_margin_se=se, head_margin_in_se=in_se)
        # redrawn blocks are not transfer (freeze k = 0 with reinit is training from scratch)
        transfers = {("finetune" if (p, k) == ("freeze", 0) else f"{p} k={k}" if p == "freeze" else p): v
                     for (p, k, r), v in entries.items() if p != "scratch" and not r}
        if transfers:
            name, (err, se, _) = min(transfers.items(), key=lambda kv: kv[1][0])
            row.update(best_error=err, best_protocol=name)
            scratch = curves[(q, n_t)]["scratch"]
            if scratch is not None:
                both = scratch[1] is not None and se is not None
                row.update(scratch_error=scratch[0], transferability=scratch[0] - err,
                           transferability_se=math.hypot(scratch[1], se) if both else None)
        best.append(row)
    label = (f"L = {L}, width {setting['width']} {setting['activation']}, D = {setting['D']}, N = {setting['N']}, "
             f"n_source = {setting['n_source']}")
    return {"label": label, "setting": setting, "n_blocks": L, "table": table, "best": best, "curves": curves,
            "defrost": defrost, "layerwise": _analyze_layerwise([r for r in rows if r["protocol"] == "layerwise"],
                                                                best, L)}


def drop_depth(cka: Sequence[float], threshold: float = CKA_DROP_THRESHOLD) -> int | None:
    """The first block l (1-based) with cka[l-1] < threshold, or None if the similarity never drops."""
    return next((l for l, c in enumerate(cka, start=1) if c < threshold), None)


def _analyze_layerwise(rows: list[dict[str, Any]], best: list[dict[str, Any]], L: int) -> dict[str, Any] | None:
    from scipy import stats

    from transferlab.report.plots import mean_se

    if not rows:
        return None
    by_q: dict[float, dict[str, Any]] = {}
    table = []
    for (q,), group in sorted(ResultTable(rows).group_by("q").items()):
        entry: dict[str, Any] = {"replicates": len(group)}
        for name in _LAYERWISE_KEYS:
            values = np.array([r[name] for r in group], dtype=float)  # (replicates, L)
            stats_ = [mean_se(values[:, l]) for l in range(values.shape[1])]
            entry[name] = [m for m, _ in stats_]
            entry[f"{name}_se"] = [se for _, se in stats_]
        entry["drop_depth"] = drop_depth(entry["cka"])
        # blocks 1..drop-1 are alike in both networks: the depth they suggest to freeze (L if no drop)
        entry["suggested_k"] = L if entry["drop_depth"] is None else entry["drop_depth"] - 1
        entry["target_scratch_error"] = float(np.mean([r["test_error"] for r in group]))
        by_q[q] = entry
        for l in range(L):
            table.append({"q": q, "block": l + 1, **{name: entry[name][l] for name in _LAYERWISE_KEYS}})
    points = [(by_q[r["q"]]["suggested_k"], r["k_star"]) for r in best if r["q"] in by_q and r["k_star"] is not None]
    rho, note = None, ""
    if len(points) < MIN_SPEARMAN_POINTS:
        note = f"not reported: {len(points)} (q, n_t) settings with both k* and a layerwise row (needs {MIN_SPEARMAN_POINTS})"
    elif len({p[0] for p in points}) < 2 or len({p[1] for p in points}) < 2:
        note = f"not defined: the drop depth or k* is the same in all {len(points)} settings"
    else:
        rho = float(stats.spearmanr([p[0] for p in points], [p[1] for p in points]).statistic)
    return {"by_q": by_q, "table": table, "spearman": rho, "spearman_points": len(points), "spearman_note": note,
            "points": points}


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    plan = []
    for s in results.data.get("settings", []):
        where = f" ({s['label']})" if s["label"] else ""
        L = s["n_blocks"]
        if any(c["kept"] for c in s["curves"].values()):
            plan.append((f"defrost_error_vs_k{s['slug']}",
                         f"Target test error against the number k of frozen source blocks{where}, one panel per "
                         f"source-target correlation q, one colour per target training size n_t (k = 0: full "
                         f"fine-tuning; k = {L}: only a new head trains). Solid: the unfrozen blocks start from the "
                         "source weights; dashed: they are re-initialised. Dotted horizontal line: training from "
                         f"scratch; cross at k = {L}: the convex linear probe. Bars: ± 2 standard errors over "
                         "instances and replicates (the same target samples at every k); the circled point is k*, "
                         "the best depth.", functools.partial(_curve_figure, s)))
            plan.append((f"defrost_k_star{s['slug']}",
                         f"k*, the number of frozen source blocks with the lowest mean target test error{where}, "
                         f"for each target training size n_t (columns) and correlation q (rows); 0 means full "
                         f"fine-tuning is best, {L} means only the head should train. The number under k* is by how "
                         "many paired standard errors head-only transfer (the better of freezing every block and "
                         "the linear probe) is worse than k* (0: head-only is the best). k* is the argmin of noisy "
                         "means: neighbouring depths within about 2 SE are not distinguished.",
                         functools.partial(_k_star_figure, s)))
        if any(r["transferability"] is not None for r in s["best"]):
            plan.append((f"defrost_transferability{s['slug']}",
                         f"Transferability{where}: scratch test error minus the best transfer protocol's (any "
                         "depth with source weights kept, the probe, fine-tuning, defrosting), for each n_t "
                         "(columns) and q (rows). Red: transfer helps; blue: it hurts. Each cell is annotated "
                         "with the value and its standard error (the two errors treated as independent). Taking "
                         "the best of several noisy estimates biases it upward: small positive values are not "
                         "evidence on their own.", functools.partial(_transferability_figure, s)))
        if s["defrost"]:
            plan.append((f"defrost_stages{s['slug']}",
                         f"Incremental defrosting{where}: test error after each stage, from all blocks frozen but "
                         f"the head (k = {L}, left) to all trained (k = 0, right), each stage continuing from the "
                         "previous one's weights; one panel per q, one colour per n_t; means over instances and "
                         "replicates.", functools.partial(_defrost_figure, s)))
        if s["layerwise"]:
            plan.append((f"defrost_layerwise{s['slug']}",
                         f"Layerwise comparison{where} of a network trained from scratch on the source with one "
                         "trained from scratch on abundant target data, on common target test inputs, after each "
                         "block; one colour per q; means over replicates with ± 2 SE bars. Top left: linear CKA "
                         f"(grey line: the drop threshold {CKA_DROP_THRESHOLD}); top right: fraction of shared "
                         "k nearest neighbours; bottom left: information imbalance, solid source → target, dashed "
                         "target → source (0: the first predicts the second's neighbourhoods, 1: no information); "
                         "bottom right: TwoNN intrinsic dimension, solid source, dashed target.",
                         functools.partial(_layerwise_figure, s)))
    return plan


def _panels(n: int, height: float = 3.6) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(4.2 * n + 1.8, 16), height))
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    return fig, list(axes)


def _curve_figure(s: dict[str, Any]) -> Figure:
    from transferlab.report.plots import legend_outside

    L = s["n_blocks"]
    qs = sorted({q for q, _ in s["curves"]})
    sizes = sorted({n for _, n in s["curves"]})
    fig, axes = _panels(len(qs))
    for ax, q in zip(axes, qs, strict=True):
        for i, n in enumerate(sizes):
            c = s["curves"].get((q, n))
            if c is None:
                continue
            color = f"C{i}"
            for key, style in (("kept", "-"), ("reinit", "--")):
                if c[key]:
                    se = np.array([p[2] or 0.0 for p in c[key]])
                    ax.errorbar([p[0] for p in c[key]], [p[1] for p in c[key]], yerr=2 * se, fmt="o" + style,
                                color=color, ms=4, capsize=2, label=f"n_t = {n}" + (" (reinit)" if key == "reinit" else ""))
            if c["kept"]:
                k_star, m_star = min(((p[0], p[1]) for p in c["kept"]), key=lambda t: t[1])
                ax.plot([k_star], [m_star], "o", ms=11, mfc="none", mec=color)
            if c["scratch"] is not None:
                ax.axhline(c["scratch"][0], color=color, ls=":", lw=1)
            if c["probe"] is not None:
                ax.plot([L], [c["probe"][0]], "x", color=color, ms=8)
        ax.set_xticks(range(L + 1))
        ax.set_xlim(-0.3, L + 0.3)
        ax.set_xlabel("k, blocks frozen")
        ax.set_title(f"q = {q:g}", fontsize=10)
    axes[0].set_ylabel("target test error")
    legend_outside(axes[-1])
    fig.tight_layout()
    return fig


def _grid(s: dict[str, Any], value: Any) -> tuple[list[float], list[int], np.ndarray]:
    qs = sorted({r["q"] for r in s["best"]})
    sizes = sorted({r["n_t"] for r in s["best"]})
    grid = np.full((len(qs), len(sizes)), np.nan)
    for r in s["best"]:
        v = value(r)
        if v is not None:
            grid[qs.index(r["q"]), sizes.index(r["n_t"])] = v
    return qs, sizes, grid


def _map_axes(ax: Any, qs: list[float], sizes: list[int]) -> None:
    ax.set_xticks(range(len(sizes)), [str(n) for n in sizes])
    ax.set_yticks(range(len(qs)), [f"{q:g}" for q in qs])
    ax.set_xlabel("target training size n_t")
    ax.set_ylabel("correlation q")


def _map_figure(s: dict[str, Any], value: Any, text: Any, colorbar_label: str, **imshow: Any) -> tuple[Figure, Any]:
    """A (q rows) x (n_t columns) map of ``value(row)`` over the setting's ``best`` rows, each cell annotated
    with ``text(row)`` (None: no text) and a colour bar; returns the figure and the colour bar."""
    from matplotlib.figure import Figure

    qs, sizes, grid = _grid(s, value)
    rows = {(r["q"], r["n_t"]): r for r in s["best"]}
    fig = Figure(figsize=(1.2 * len(sizes) + 3.0, 0.8 * len(qs) + 2.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", **imshow)
    for i, q in enumerate(qs):
        for j, n in enumerate(sizes):
            r = rows.get((q, n))
            label = None if r is None or value(r) is None else text(r)
            if label is not None:
                words, color = label
                ax.text(j, i, words, ha="center", va="center", fontsize=8, color=color)
    _map_axes(ax, qs, sizes)
    colorbar = fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    return fig, colorbar


def _k_star_figure(s: dict[str, Any]) -> Figure:
    L = s["n_blocks"]

    def text(r: dict[str, Any]) -> tuple[str, str]:
        extra = "" if r["head_margin_in_se"] is None else f"\n{_se_text(r['head_margin_in_se'])}"
        return f"{r['k_star']}{extra}", "white" if r["k_star"] < 0.6 * L else "black"

    fig, colorbar = _map_figure(s, lambda r: r["k_star"], text, "k*, blocks frozen", cmap="viridis", vmin=0, vmax=L)
    colorbar.set_ticks(range(L + 1))
    return fig


def _transferability_figure(s: dict[str, Any]) -> Figure:
    from transferlab.report.plots import diverging_norm

    def text(r: dict[str, Any]) -> tuple[str, str]:
        se = "" if r["transferability_se"] is None else f"\n± {r['transferability_se']:.3f}"
        return f"{r['transferability']:+.3f}{se}", "black"

    grid = _grid(s, lambda r: r["transferability"])[2]
    fig, _ = _map_figure(s, lambda r: r["transferability"], text, "scratch error − best transfer error",
                         cmap="RdBu_r", norm=diverging_norm(grid, cap=0.5))
    return fig


def _defrost_figure(s: dict[str, Any]) -> Figure:
    from transferlab.report.plots import legend_outside

    qs = sorted({q for q, _ in s["defrost"]})
    sizes = sorted({n for _, n in s["defrost"]})
    fig, axes = _panels(len(qs))
    for ax, q in zip(axes, qs, strict=True):
        for i, n in enumerate(sizes):
            if (q, n) in s["defrost"]:
                ks, errors = s["defrost"][(q, n)]
                ax.plot(ks, errors, "o-", color=f"C{i}", label=f"n_t = {n}")
        ax.set_xlim(s["n_blocks"] + 0.3, -0.3)
        ax.set_xlabel("k, blocks still frozen")
        ax.set_title(f"q = {q:g}", fontsize=10)
    axes[0].set_ylabel("target test error")
    legend_outside(axes[-1])
    fig.tight_layout()
    return fig


def _layerwise_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    lw = s["layerwise"]["by_q"]
    blocks = np.arange(1, s["n_blocks"] + 1)
    fig = Figure(figsize=(10.0, 6.8))
    axes = fig.subplots(2, 2).ravel()
    panels = ((axes[0], (("cka", "-"),), "linear CKA"), (axes[1], (("knn_overlap", "-"),), "k-NN overlap"),
              (axes[2], (("ii_source_to_target", "-"), ("ii_target_to_source", "--")), "information imbalance"),
              (axes[3], (("twonn_source", "-"), ("twonn_target", "--")), "TwoNN dimension"))
    for ax, series, title in panels:
        for i, (q, entry) in enumerate(sorted(lw.items())):
            for j, (name, style) in enumerate(series):
                se = np.array([v or 0.0 for v in entry[f"{name}_se"]])
                ax.errorbar(blocks, entry[name], yerr=2 * se, fmt="o" + style, color=f"C{i}", ms=4, capsize=2,
                            label=f"q = {q:g}" if j == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(blocks)
        ax.set_xlabel("block")
    axes[0].axhline(CKA_DROP_THRESHOLD, color="grey", lw=0.8)
    legend_outside(axes[1])
    fig.tight_layout()
    return fig
