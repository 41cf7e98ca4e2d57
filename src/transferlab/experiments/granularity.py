"""``granularity``: coarse vs fine pretraining labels on hierarchical multi-view data (Hong et al. 2024).

One cell is one pretraining label function (``labels``, ``n_classes``, ``split``) on one hierarchical
multi-view task (:mod:`transferlab.tasks.multiview`; docs/models/multiview.md), with ``instances``
seeds trained as one batched program; docs/models/granularity.md explains the model and the results.

Per replicate, one generator seeded by (spec seed, replicate, the fields that fix the tensor shapes:
C, k, d, P, the sample sizes, ``instances``) draws, in order, the feature dictionary, the ``n_pretrain``
easy pretraining samples of every instance, the ``n_target`` downstream training samples of every
instance (hard with probability ``target_hard``), and one shared easy and one shared hard test set of
``test_size`` samples each. It is *not* seeded by the label function or by the strength, noise and
rarity knobs, so every label variant of a replicate sees the same inputs, and a rarity sweep keeps the
classes, patch positions and noise (common random numbers): differences between variants are paired.

Pretraining (the paper's network, :func:`transferlab.nets.patch_cnn.patch_cnn`): K output classes (the
label function's; K m neurons), F_c(X) = sum_r sum_p ReLU(<w_{c,r}, x_p> + b) with the second layer
fixed at 1, w_{c,r} ~ N(0, (1/d)^2 I) and the fixed threshold b = -``threshold`` / d, trained on the easy
samples by full-batch gradient descent on the cross-entropy (``epochs`` steps of step size ``lr``; the
closed-form :func:`transferlab.nets.patch_cnn.patch_gd`, which is :func:`transferlab.train.loop.fit` with
SGD and batch size n_pretrain up to float summation order). The alignment of the neurons with the
features is recorded at epoch 0 (initialisation) and up to ``checkpoints`` epochs spaced evenly in log(epoch):
A(v) = max_j <w_j, v> / ||w_j|| over all K m neurons, for every common and fine feature v; a feature is
*learned* when A(v) >= ``learned_cosine``.

Labels: ``coarse`` (C classes), ``fine`` (C k), ``aligned`` / ``global`` / ``random`` with ``n_classes``
(:func:`transferlab.tasks.multiview.label_map`), ``none`` (no pretraining: the features of the initial
weights, the no-pretraining baseline); ``split`` s > 1 makes the labels finer than the hierarchy: every
class is cut at random, sample by sample, into s classes (label y s + u, u uniform in [s]), the analogue of
pretraining label sets finer than the data's features (Hong et al.'s too-fine end of the U shape).

Downstream (coarse labels; the protocols of :mod:`transferlab.protocols.transfer`): the linear probe
(:func:`transferlab.protocols.linear_probe`, penalty ``probe_l2``) on the frozen patch-pooled features h,
evaluated as loaded into a network head (in the network's dtype), and full fine-tuning (every w and a new
linear head drawn from the cell's generator stream 1 as ``protocols.transfer.finetune`` draws it; full-batch
GD by :func:`~transferlab.nets.patch_cnn.patch_gd`, ``target_epochs`` steps of ``target_lr``), both trained
on the instance's ``n_target`` samples and tested on the shared easy and hard test sets.

Batching. A batch holds cells of equal K, data shapes, width and schedule (:meth:`batch_key`). Cells that
also share their data (same seed, replicate, data fields and knobs: the label variants of one replicate)
and their downstream settings form one input set, drawn once; input sets with as many cells run as one
program: instance i of set q is one row of a first layer (Q I, d, S N) in which the S cells' neurons sit
side by side on that instance's inputs (one wider layer, each cell with its own head and labels). The
program pretrains, records the alignments, fits every probe in one call, fine-tunes and evaluates all
Q x S x I networks at once. Each cell draws its initial weights and head from its own generator and its
labels from its own seed, and full-batch training has no minibatch order, so a cell's numbers do not
depend on what it was batched with (up to float summation order).

Rows: ``n_pretrain_classes`` (K), ``probe_easy_error`` / ``probe_hard_error`` / ``finetune_easy_error``
/ ``finetune_hard_error`` (means over instances) and their ``*_instances`` lists, ``pretrain_loss_instances``,
``pretrain_error_instances`` (training error on the pretraining labels; not for ``none``), ``checkpoint_epochs``,
``align_common`` / ``align_fine`` / ``learned_common`` / ``learned_fine`` (per checkpoint, means over
instances and features), ``align_fine_instances`` (final mean fine alignment per instance),
``fine_learned_by_feature`` (per fine feature, the fraction of instances that learned it by the end),
``converged`` (per instance: pretraining, probe and fine-tuning all converged) and ``unconverged``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import model_validator

from transferlab.errors import ConfigError
from transferlab.experiments._source_cache import digest
from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable
from transferlab.experiments.defrost import paired_difference

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from transferlab.nets.blocks import BlockNet
    from transferlab.tasks.multiview import MultiViewData, MultiViewFeatures

__all__ = ["GranularityConfig", "GranularityExperiment", "pretraining_labels", "variant_label"]

Labels = Literal["none", "coarse", "fine", "aligned", "global", "random"]

#: Fields of a cell that define its label variant; every other field defines the setting.
_VARIANT_FIELDS = ("labels", "n_classes", "split")
#: Label functions drawn in the alignment figure (the hierarchy's own levels; the others are in the tables).
_ALIGNMENT_SHOWN = ("coarse", "aligned", "fine")
#: Error columns of a row, in figure and table order.
_ERRORS = ("probe_easy_error", "probe_hard_error", "finetune_easy_error", "finetune_hard_error")


class GranularityConfig(ExperimentConfig):
    """One cell: a pretraining label function on one hierarchical multi-view task (module docstring).

    Data (:func:`transferlab.tasks.multiview.multiview_data`): ``n_superclasses`` C, ``n_subclasses`` k,
    patch dimension ``d``, ``patches`` P of which ``common_patches`` carry the common and ``fine_patches``
    the fine feature, strengths, ``noise`` (RMS norm of each patch's noise), ``fine_probability`` (easy
    samples that carry their fine feature), ``hard_scale`` (the common feature's factor in hard samples).
    """

    labels: Labels = "coarse"
    n_classes: int | None = None
    split: int = 1
    n_superclasses: int = 2
    n_subclasses: int = 8
    d: int = 32
    patches: int = 8
    common_patches: int = 2
    fine_patches: int = 2
    common_strength: float = 1.0
    fine_strength: float = 1.0
    noise: float = 0.5
    fine_probability: float = 1.0
    hard_scale: float = 0.0
    n_pretrain: int = 500
    width: int = 5
    threshold: float = 1.3
    lr: float = 1.0
    epochs: int = 150
    checkpoints: int = 10
    n_target: int = 300
    target_hard: float = 0.0
    target_lr: float = 1.0
    target_epochs: int = 100
    probe_l2: float = 1e-3
    test_size: int = 1000
    instances: int = 8
    learned_cosine: float = 0.9

    @model_validator(mode="after")
    def _consistent(self) -> GranularityConfig:
        from transferlab._checks import check_int, check_real
        from transferlab.tasks.multiview import label_map

        C = check_int(self.n_superclasses, "n_superclasses", low=2, note="the downstream task is coarse")
        k = check_int(self.n_subclasses, "n_subclasses", low=1)
        check_int(self.d, "d", low=C * (1 + k), note="n_superclasses * (1 + n_subclasses) orthonormal features")
        P = check_int(self.patches, "patches", low=1)
        if self.common_patches + self.fine_patches > P:
            raise ConfigError(f"common_patches + fine_patches must be <= patches = {P}")
        for name in ("common_patches", "fine_patches"):
            check_int(getattr(self, name), name, low=0)
        for name in ("common_strength", "fine_strength", "noise"):
            check_real(getattr(self, name), name, low=0.0)
        for name in ("fine_probability", "hard_scale", "target_hard"):
            check_real(getattr(self, name), name, low=0.0, high=1.0)
        for name in ("split", "n_pretrain", "width", "epochs", "checkpoints", "n_target", "target_epochs",
                     "test_size", "instances"):
            check_int(getattr(self, name), name, low=1)
        if self.checkpoints > self.epochs:
            raise ConfigError(f"checkpoints must be <= epochs = {self.epochs}")
        for name in ("lr", "target_lr"):
            check_real(getattr(self, name), name, low=0.0, low_open=True)
        check_real(self.threshold, "threshold")
        check_real(self.probe_l2, "probe_l2", low=0.0)
        check_real(self.learned_cosine, "learned_cosine", low=0.0, high=1.0, high_open=True)
        if self.labels == "none":
            if self.n_classes is not None or self.split != 1:
                raise ConfigError("labels = 'none' (no pretraining) takes neither n_classes nor split")
        elif self.labels in ("coarse", "fine"):
            label_map(self.labels, C, k, n_classes=self.n_classes)
        elif self.n_classes is None:
            raise ConfigError(f"n_classes is required for labels = {self.labels!r}")
        elif self.labels == "aligned":
            check_int(self.n_classes, "n_classes", low=C, high=C * k, note="aligned classes lie within superclasses")
        else:
            check_int(self.n_classes, "n_classes", low=1, high=C * k)
        return self

    @property
    def pretrain_classes(self) -> int:
        """K, the outputs of the pretraining head (C for ``none``, whose head is never trained)."""
        C, k = self.n_superclasses, self.n_subclasses
        base = {"none": C, "coarse": C, "fine": C * k}.get(self.labels, self.n_classes)
        return int(base) * self.split  # type: ignore[arg-type]

    def data_fields(self) -> dict[str, Any]:
        """The fields that seed the data (shapes only; see the module docstring)."""
        return {name: getattr(self, name) for name in (
            "n_superclasses", "n_subclasses", "d", "patches", "n_pretrain", "n_target", "test_size", "instances")}


class GranularityExperiment(Experiment):
    name = "granularity"
    version = "1"
    Config = GranularityConfig
    description = ("Coarse vs fine pretraining labels on hierarchical multi-view data (Hong et al. 2024): "
                   "easy and hard downstream error and neuron-feature alignment")

    def batch_key(self, config: GranularityConfig) -> Hashable:  # type: ignore[override]
        """Equal K, data shapes, width, threshold and schedule: one stacked pretraining network."""
        return (config.pretrain_classes, config.labels == "none", config.n_superclasses, config.n_subclasses,
                config.d, config.patches, config.n_pretrain, config.width, config.threshold, config.lr,
                config.epochs, config.checkpoints, config.instances)

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        return _run_stacked(list(cells))

    def analyze(self, table: ResultTable) -> Results:
        """Per setting (every field but the label variant): downstream errors with standard errors over
        instances x replicates, paired differences between variants, alignment curves."""
        setting_fields = sorted(set(GranularityConfig.model_fields) - set(_VARIANT_FIELDS))
        settings = []
        for key, rows in table.group_by(*setting_fields).items():
            settings.append(_analyze_setting(dict(zip(setting_fields, key, strict=True)), rows))
        varying = [f for f in setting_fields if len({s["setting"][f] for s in settings}) > 1]
        for s in settings:
            s["label"] = ", ".join(f"{f} = {s['setting'][f]:g}" if isinstance(s["setting"][f], float)
                                   else f"{f} = {s['setting'][f]}" for f in varying)
        unconverged = sum(r["unconverged"] for r in table.rows)
        runs = sum(len(r["converged"]) for r in table.rows)
        summary: dict[str, Any] = {"runs (instances x cells) that did not converge (kept, flagged)":
                                   f"{unconverged} of {runs}"}
        tables: dict[str, list[dict[str, Any]]] = {}
        for s in settings:
            prefix = f"{s['label']}: " if s["label"] else ""
            tables[f"{prefix}downstream error by pretraining labels"] = s["table"]
            for name, text in s["comparisons"].items():
                summary[f"{prefix}{name}"] = text
        sweeps = _sweeps(settings, varying)
        for field_name, sweep in sweeps.items():
            tables[f"sweep over {field_name}"] = sweep["table"]
        return Results(tables=tables, summary=summary, data={"settings": settings, "sweeps": sweeps})

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


# --------------------------------------------------------------------------------------------------
# data, labels, networks
# --------------------------------------------------------------------------------------------------


def _seq(cell: Cell, fields: dict[str, Any]) -> np.random.SeedSequence:
    return np.random.SeedSequence([cell.seed, cell.replicate, *(int(c, 16) for c in digest(fields)[:32])])


def _draw(cell: Cell, cfg: GranularityConfig) -> tuple[MultiViewFeatures, dict[str, MultiViewData]]:
    """The dictionary and the four data sets of a cell's replicate (module docstring for the order)."""
    from transferlab.tasks.multiview import multiview_data, multiview_features

    rng = np.random.default_rng(_seq(cell, {"role": "data", **cfg.data_fields()}))
    feats = multiview_features(cfg.n_superclasses, cfg.n_subclasses, cfg.d, generator=rng)
    kw = {"patches": cfg.patches, "common_patches": cfg.common_patches, "fine_patches": cfg.fine_patches,
          "common_strength": cfg.common_strength, "fine_strength": cfg.fine_strength, "noise": cfg.noise,
          "fine_probability": cfg.fine_probability, "hard_scale": cfg.hard_scale}
    data = {
        "pretrain": multiview_data(feats, cfg.n_pretrain, rng, instances=cfg.instances, **kw),
        "target": multiview_data(feats, cfg.n_target, rng, instances=cfg.instances, hard=cfg.target_hard, **kw),
        "easy": multiview_data(feats, cfg.test_size, rng, **kw),
        "hard": multiview_data(feats, cfg.test_size, rng, hard=1.0, **kw),
    }
    return feats, data


def pretraining_labels(cfg: GranularityConfig, fine: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The pretraining labels of fine labels ``fine`` (any shape) under ``cfg``'s label function.

    ``coarse`` / ``fine`` / ``aligned`` / ``global`` / ``random``: the :class:`LabelMap` of that name
    (``aligned`` and ``global`` in their unshuffled form; ``random`` draws its partition from ``rng``),
    then, with ``split`` s > 1, y -> y s + u with u uniform in [s], one draw per sample (int64, the
    shape of ``fine``, values in [0, K)).
    """
    import torch

    from transferlab.tasks.multiview import label_map

    if cfg.labels == "none":
        raise ConfigError("labels = 'none' has no pretraining labels")
    mapping = label_map(cfg.labels, cfg.n_superclasses, cfg.n_subclasses, n_classes=cfg.n_classes,
                        generator=rng if cfg.labels == "random" else None)
    y = mapping(fine)
    if cfg.split > 1:
        y = y * cfg.split + torch.from_numpy(rng.integers(0, cfg.split, size=tuple(y.shape)))
    return y


def _network(cfg: GranularityConfig, instances: int, generator: torch.Generator, dtype: torch.dtype) -> BlockNet:
    from transferlab.nets.patch_cnn import patch_cnn

    return patch_cnn(cfg.patches, cfg.d, cfg.pretrain_classes, cfg.width, instances=instances,
                     bias=-cfg.threshold / cfg.d, generator=generator, dtype=dtype)


def _checkpoint_epochs(cfg: GranularityConfig) -> list[int]:
    """Epoch 0 and the distinct values of round(E^(t/T)), t = 1..T (E = epochs, T = checkpoints): spaced
    evenly in log(epoch), since features are learned in the first few steps; at most T + 1, ending at E."""
    return sorted({0, *(round(cfg.epochs ** (t / cfg.checkpoints)) for t in range(1, cfg.checkpoints + 1))})


def _group_key(cell: Cell, cfg: GranularityConfig) -> tuple[Any, ...]:
    """Cells with equal keys draw identical data (:func:`_draw`: the seed, the replicate, the data fields and
    the knobs) and run the same downstream protocols: one input set for all of them (module docstring)."""
    knobs = ("common_patches", "fine_patches", "common_strength", "fine_strength", "noise", "fine_probability",
             "hard_scale", "target_hard", "target_lr", "target_epochs", "probe_l2")
    return (cell.seed, cell.replicate, *cfg.data_fields().values(), *(getattr(cfg, k) for k in knobs))


def _run_stacked(cells: list[Cell], dtype: torch.dtype | None = None) -> list[dict[str, Any]]:
    """Every cell of a batch (equal :meth:`GranularityExperiment.batch_key`), as few programs as the shapes
    allow: cells that share their data are one input set, and input sets with as many cells and equal
    downstream settings are one program (:func:`_run_program`). ``dtype`` defaults to float32."""
    import torch

    cfgs: list[GranularityConfig] = [c.config for c in cells]  # type: ignore[misc]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (cell, cfg) in enumerate(zip(cells, cfgs, strict=True)):
        groups.setdefault(_group_key(cell, cfg), []).append(i)
    programs: dict[tuple[Any, ...], list[list[int]]] = {}
    for members in groups.values():
        cfg = cfgs[members[0]]
        shape = (len(members), cfg.n_target, cfg.test_size, cfg.target_lr, cfg.target_epochs, cfg.probe_l2)
        programs.setdefault(shape, []).append(members)
    rows: dict[int, dict[str, Any]] = {}
    for program in programs.values():
        rows.update(_run_program(cells, program, torch.float32 if dtype is None else dtype))
    return [rows[i] for i in range(len(cells))]


def _run_program(cells: list[Cell], program: list[list[int]], dtype: torch.dtype) -> dict[int, dict[str, Any]]:
    """Pretraining, alignment checkpoints, probe and fine-tuning of Q input sets x S cells x I instances at once.

    ``program[q]`` lists the S cells (indices into ``cells``) of input set q. Instance i of set q is network
    row g = q I + i; its S cells are networks s = 0..S-1 side by side in one first layer (G, d, S N) with
    G = Q I (:func:`transferlab.nets.patch_cnn.patch_gd`). Returns {cell index: row}.
    """
    import torch

    from transferlab.experiments.transfer import _PROBE_TOL  # the transfer kind's probe tolerance
    from transferlab.nets.blocks import BatchedLinear
    from transferlab.nets.patch_cnn import neuron_feature_cosines, patch_gd, patch_pool
    from transferlab.protocols import linear_probe

    first: GranularityConfig = cells[program[0][0]].config  # type: ignore[assignment]
    I, S, Q = first.instances, len(program[0]), len(program)
    G, K, C = Q * I, first.pretrain_classes, first.n_superclasses
    N, bias = K * first.width, -first.threshold / first.d
    drawn = [_draw(cells[members[0]], cells[members[0]].config) for members in program]  # type: ignore[arg-type]

    def per_set(name: str) -> torch.Tensor:  # (G, n, P, d), each instance's own samples
        return torch.cat([data[name].x for _, data in drawn])

    def pooled(weight: torch.Tensor, name: str) -> torch.Tensor:
        """(G, n, S, N): features of every network on its set's data ``name`` (a shared test set is broadcast)."""
        parts = [patch_pool(weight[q * I : (q + 1) * I], data[name].x.expand(I, *data[name].x.shape[-3:]), bias=bias)
                 for q, (_, data) in enumerate(drawn)]
        return torch.cat(parts).unflatten(2, (S, N))

    def labels(name: str, kind: str = "coarse") -> torch.Tensor:  # (G, n)
        return torch.cat([getattr(data[name], kind).expand(I, data[name].x.shape[-3]) for _, data in drawn])

    def error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (G, S, n, c) against (G, S or 1, n)
        return (logits.argmax(-1) != y).double().mean(-1)

    weight = torch.cat([torch.cat([_network(cells[i].config, I, cells[i].torch_generator(0),  # type: ignore[arg-type]
                                            dtype).blocks[0].weight.detach() for i in members], 2)
                        for members in program])  # (G, d, S N)
    epochs = [0] if first.labels == "none" else _checkpoint_epochs(first)
    pretrain: dict[str, torch.Tensor] = {"converged": torch.ones(G, S, dtype=torch.bool)}
    snapshots = {0: weight}
    if first.labels != "none":
        y = torch.cat([torch.stack([pretraining_labels(cells[i].config, data["pretrain"].fine,  # type: ignore[arg-type]
                                                       np.random.default_rng(_seq(cells[i], {
                                                           "role": "labels", **cells[i].config.data_fields()})))
                                    for i in members], 1) for members, (_, data) in zip(program, drawn, strict=True)])
        gd = patch_gd(weight, per_set("pretrain"), y, networks=S, bias=bias, lr=first.lr, steps=first.epochs,
                      classes=K, record=epochs)
        weight, snapshots = gd.weight, gd.snapshots
        sums = pooled(weight, "pretrain").unflatten(3, (K, first.width)).sum(4)  # (G, n, S, K)
        pretrain = {"loss": gd.losses[-1], "error": error(sums.transpose(1, 2), y), "converged": gd.converged}
    dictionary = torch.cat([feats.dictionary.expand(I, *feats.dictionary.shape) for feats, _ in drawn])  # (G, M, d)
    curves = torch.stack([neuron_feature_cosines(snapshots[e], dictionary).unflatten(1, (S, N)).amax(2)
                          for e in epochs], 2)  # (G, S, T + 1, M)

    # downstream: the probe on the frozen features, then fine-tuning, on the coarse labels of the target set
    y_target = labels("target")
    features = pooled(weight, "target").permute(0, 2, 1, 3).flatten(0, 1)  # (G S, n, N)
    probe = linear_probe(features, y_target.repeat_interleave(S, 0), n_classes=C, l2=first.probe_l2, tol=_PROBE_TOL)
    heads = [[BatchedLinear(I, N, C, generator=cells[i].torch_generator(1), dtype=dtype) for i in members]
             for members in program]  # the new heads, drawn as protocols.transfer.finetune draws them
    head = (torch.cat([torch.stack([h.weight.detach() for h in hs], 1) for hs in heads]),
            torch.cat([torch.stack([h.bias.detach() for h in hs], 1) for hs in heads]))
    tuned = patch_gd(weight, per_set("target"), y_target, networks=S, bias=bias, lr=first.target_lr,
                     steps=first.target_epochs, head=head)
    assert tuned.head is not None
    V, c = tuned.head
    errors = {}
    for split in ("easy", "hard"):
        y_test = labels(split)[:, None]  # (G, 1, n)
        # the probe as loaded into a network's head (protocols.transfer): in the network's dtype
        probe_logits = torch.baddbmm(probe.bias.to(dtype), pooled(weight, split).permute(0, 2, 1, 3).flatten(0, 1),
                                     probe.weight.to(dtype))  # (G S, n, C)
        errors[f"probe_{split}_error"] = error(probe_logits.unflatten(0, (G, S)), y_test)
        h = pooled(tuned.weight, split)  # (G, n, S, N)
        errors[f"finetune_{split}_error"] = error(torch.einsum("gnsj,gsjc->gsnc", h, V) + c, y_test)
    converged = pretrain["converged"] & probe.converged.view(G, S) & tuned.converged
    rows = {}
    for q, members in enumerate(program):
        part = slice(q * I, (q + 1) * I)
        for s, i in enumerate(members):
            cfg: GranularityConfig = cells[i].config  # type: ignore[assignment]
            rows[i] = _row(cfg, {name: e[part, s] for name, e in errors.items()},
                           {name: v[part, s] for name, v in pretrain.items()}, epochs, curves[part, s])
            rows[i]["converged"] = converged[part, s].tolist()
            rows[i]["unconverged"] = int((~converged[part, s]).sum())
    return rows


def _row(cfg: GranularityConfig, errors: dict[str, torch.Tensor], pretrain: dict[str, torch.Tensor],
         epochs: list[int], curves: torch.Tensor) -> dict[str, Any]:
    """A cell's row (module docstring) from its instances' errors (I,), pretraining record (I,) each and
    alignment curves (I, T + 1, M); the caller adds ``converged`` and ``unconverged``."""
    C = cfg.n_superclasses
    common, fine = curves[..., :C], curves[..., C:]  # (I, T + 1, C), (I, T + 1, C k)
    learned = curves >= cfg.learned_cosine
    row: dict[str, Any] = {"n_pretrain_classes": cfg.pretrain_classes}
    for name, values in errors.items():
        row[name] = float(values.mean())
        row[f"{name}_instances"] = values.tolist()
    if "loss" in pretrain:  # absent for labels = "none"
        row.update(pretrain_loss_instances=pretrain["loss"].tolist(),
                   pretrain_error_instances=pretrain["error"].tolist())
    row.update(
        checkpoint_epochs=epochs,
        align_common=common.mean((0, 2)).tolist(),
        align_fine=fine.mean((0, 2)).tolist(),
        learned_common=learned[..., :C].double().mean((0, 2)).tolist(),
        learned_fine=learned[..., C:].double().mean((0, 2)).tolist(),
        align_fine_instances=fine[:, -1].mean(1).tolist(),
        fine_learned_by_feature=learned[:, -1, C:].double().mean(0).tolist(),
    )
    return row


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------


def _variant(row: dict[str, Any]) -> tuple[str, int | None, int]:
    return row["labels"], row.get("n_classes"), row.get("split", 1)


def variant_label(labels: str, n_classes: int | None, split: int) -> str:
    """A variant's name in tables and legends, e.g. ``fine``, ``aligned 4``, ``fine x 2``."""
    text = labels if n_classes is None else f"{labels} {n_classes}"
    return text if split == 1 else f"{text} x {split}"


def _runs(rows: list[dict[str, Any]], name: str) -> dict[tuple[int, int], float]:
    """(replicate, instance) -> value of the per-instance column ``name``: runs with equal keys saw the same
    data (the data are seeded without the label variant), so differences between variants are paired."""
    return {(r["replicate"], i): v for r in rows for i, v in enumerate(r[name])}


def _in_se(mean: float, se: float | None) -> str:
    if se is None:
        return "one run, no standard error"
    if se == 0:
        return "no spread over runs"
    return f"{mean / se:+.1f} SE"


def _analyze_setting(setting: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from transferlab.report.plots import mean_se

    variants: dict[tuple[str, int | None, int], dict[str, Any]] = {}
    table = []
    for key, group in sorted(ResultTable(rows).group_by(*_VARIANT_FIELDS).items(),
                             key=lambda kv: (kv[1][0]["n_pretrain_classes"], str(kv[0]))):
        variant = {"rows": group, "K": group[0]["n_pretrain_classes"], "label": variant_label(*key)}
        entry: dict[str, Any] = {"pretraining labels": variant["label"], "classes": variant["K"]}
        for name in _ERRORS:
            mean, se = mean_se(np.array([v for r in group for v in r[f"{name}_instances"]], dtype=float))
            variant[name] = (mean, se)
            entry[name.replace("_error", "")] = mean
            entry[f"{name.replace('_error', '')} se"] = se
        align = np.array([r["align_fine"] for r in group], dtype=float)  # (replicates, T + 1)
        variant["epochs"] = group[0]["checkpoint_epochs"]
        for name in ("align_common", "align_fine", "learned_common", "learned_fine"):
            variant[name] = np.array([r[name] for r in group], dtype=float).mean(0)
        entry["fine alignment"] = float(align[:, -1].mean())
        entry["fine learned"] = float(variant["learned_fine"][-1])
        entry["runs"] = sum(len(r["converged"]) for r in group)
        entry["unconverged runs"] = sum(r["unconverged"] for r in group)
        variants[key] = variant
        table.append(entry)
    comparisons: dict[str, str] = {}
    coarse, fine = ("coarse", None, 1), ("fine", None, 1)

    def compare(name: str, a: tuple[str, int | None, int], b: tuple[str, int | None, int], column: str) -> None:
        if a in variants and b in variants:
            ra, rb = variants[a]["rows"], variants[b]["rows"]
            mean, se, pairs = paired_difference(_runs(ra, f"{column}_instances"), _runs(rb, f"{column}_instances"))
            comparisons[name] = (f"{mean:+.3f} ({_in_se(mean, se)}; {variants[a]['label']} "
                                 f"{variants[a][column][0]:.3f} vs {variants[b]['label']} "
                                 f"{variants[b][column][0]:.3f}, {pairs} paired runs)")

    for column in ("probe_hard_error", "finetune_hard_error", "probe_easy_error"):
        compare(f"coarse - fine, {column.replace('_', ' ')}", coarse, fine, column)
    for n in sorted({k[1] for k in variants if k[1] is not None}):
        compare(f"global {n} - aligned {n}, probe hard error", ("global", n, 1), ("aligned", n, 1), "probe_hard_error")
        compare(f"random {n} - aligned {n}, probe hard error", ("random", n, 1), ("aligned", n, 1), "probe_hard_error")
    compare("none - coarse, probe hard error (pretraining vs none)", ("none", None, 1), coarse, "probe_hard_error")
    # the U shape: the finest labels against coarser aligned ones, and labels finer than the hierarchy
    for column in ("probe_hard_error", "finetune_hard_error"):
        for n in sorted({k[1] for k in variants if k[0] == "aligned"}):
            compare(f"fine - aligned {n}, {column.replace('_', ' ')}", fine, ("aligned", n, 1), column)
        for split in sorted({k[2] for k in variants if k[0] == "fine" and k[2] > 1}):
            compare(f"fine x {split} - fine, {column.replace('_', ' ')}", ("fine", None, split), fine, column)
    return {"setting": setting, "variants": variants, "table": table, "comparisons": comparisons}


def _sweeps(settings: list[dict[str, Any]], varying: list[str]) -> dict[str, dict[str, Any]]:
    """For each setting field that varies while every other one is fixed: errors against it, per variant."""
    sweeps: dict[str, dict[str, Any]] = {}
    for field_name in varying:
        others = [f for f in varying if f != field_name]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for s in settings:
            groups.setdefault(tuple(s["setting"][f] for f in others), []).append(s)
        members = max(groups.values(), key=len)
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda s: s["setting"][field_name])
        lines: dict[str, list[tuple[float, float, float | None]]] = {}
        table = []
        for s in members:
            x = s["setting"][field_name]
            for v in s["variants"].values():
                mean, se = v["probe_hard_error"]
                lines.setdefault(v["label"], []).append((x, mean, se))
                table.append({field_name: x, "pretraining labels": v["label"], "probe hard": mean,
                              "probe hard se": se, "probe easy": v["probe_easy_error"][0],
                              "finetune hard": v["finetune_hard_error"][0]})
        fixed = {f: members[0]["setting"][f] for f in others}
        # a label function run at one value only is a point, not a line: in the table, not the figure
        lines = {label: points for label, points in lines.items() if len(points) >= 2}
        sweeps[field_name] = {"lines": lines, "table": table, "fixed": fixed}
    return sweeps


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    plan: list[tuple[str, str, Any]] = []
    settings = results.data.get("settings", [])
    for i, s in enumerate(settings):
        slug = f"_{i}" if len(settings) > 1 else ""
        where = f" ({s['label']})" if s["label"] else ""
        st = s["setting"]
        task = (f"C = {st['n_superclasses']} superclasses x k = {st['n_subclasses']} subclasses, d = {st['d']}, "
                f"P = {st['patches']} patches ({st['common_patches']} common, {st['fine_patches']} fine), noise "
                f"{st['noise']:g}, fine-feature probability {st['fine_probability']:g}; {st['n_pretrain']} easy "
                f"pretraining samples, {st['n_target']} downstream samples")
        if len(s["variants"]) >= 2:
            plan.append((f"easy_hard{slug}",
                         f"Downstream coarse-label test error on easy samples (both features) and hard samples "
                         f"(common feature removed) after pretraining with each label function{where}: left the "
                         f"linear probe on the frozen features, right full fine-tuning. Bars are means over "
                         f"instances x replicates with 2 standard errors; 'none' is no pretraining (the features "
                         f"of the initial weights). {task}.",
                         lambda s=s: _easy_hard_figure(s)))
        trained = [v for k, v in s["variants"].items() if k[0] in _ALIGNMENT_SHOWN and k[2] == 1]
        if trained:
            plan.append((f"alignment{slug}",
                         f"Neuron-feature alignment during pretraining with the hierarchy's label functions (coarse, "
                         f"aligned groupings, fine){where}: for each feature v, "
                         f"A(v) = max over neurons of cos(w, v), averaged over features and runs; solid lines the "
                         f"fine features, dashed the common ones (left); right, the fraction of fine features "
                         f"learned (A(v) >= the learned-cosine threshold). {task}.",
                         lambda s=s: _alignment_figure(s)))
        aligned = [v for k, v in s["variants"].items() if k[0] in ("aligned", "coarse", "fine")]
        if len({v["K"] for v in aligned}) >= 3:
            plan.append((f"classes{slug}",
                         f"Downstream hard-sample error of the linear probe against the number of pretraining "
                         f"classes K at fixed data{where}: aligned label functions (coarse = K = C, fine = K = C k, "
                         f"and in between) joined by the solid line, with K beyond C k made by splitting every fine "
                         f"class at random ('x s'); global (misaligned) and random label functions as separate "
                         f"markers; the dotted line is no pretraining. Error bars 2 SE. {task}.",
                         lambda s=s: _classes_figure(s)))
    for field_name, sweep in results.data.get("sweeps", {}).items():
        if not sweep["lines"]:
            continue
        fixed = ", ".join(f"{k} = {v}" for k, v in sweep["fixed"].items())
        plan.append((f"sweep_{field_name}",
                     f"Downstream hard-sample error of the linear probe against {field_name}, one line per "
                     f"pretraining label function; error bars 2 SE over instances x replicates"
                     f"{'; other fields: ' + fixed if fixed else ''}.",
                     lambda f=field_name, sw=sweep: _sweep_figure(f, sw)))
    return plan


def _easy_hard_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    variants = list(s["variants"].values())
    fig = Figure(figsize=(max(6.0, 1.1 * len(variants) + 3.5), 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(variants))
    for ax, protocol, title in zip(axes, ("probe", "finetune"), ("linear probe", "fine-tuning"), strict=True):
        for j, (split, colour) in enumerate((("easy", "C0"), ("hard", "C3"))):
            stats = [v[f"{protocol}_{split}_error"] for v in variants]
            ax.bar(x + (j - 0.5) * 0.38, [m for m, _ in stats], width=0.38, color=colour, label=f"{split} samples",
                   yerr=[2 * (se or 0.0) for _, se in stats], capsize=2)
        ax.set_xticks(x, [v["label"] for v in variants], rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pretraining labels")
    axes[0].set_ylabel("downstream coarse test error")
    legend_outside(axes[-1])
    fig.tight_layout()
    return fig


def _alignment_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(9.5, 3.6))
    axes = fig.subplots(1, 2)
    for i, v in enumerate(v for k, v in s["variants"].items() if k[0] in _ALIGNMENT_SHOWN and k[2] == 1):
        colour = f"C{i % 10}"
        axes[0].plot(v["epochs"], v["align_fine"], "-", color=colour, label=v["label"])
        axes[0].plot(v["epochs"], v["align_common"], "--", color=colour)
        axes[1].plot(v["epochs"], v["learned_fine"], "-", color=colour, label=v["label"])
    axes[0].set_ylabel("alignment A(v), mean over features")
    axes[1].set_ylabel("fraction of fine features learned")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("pretraining epoch (full-batch step; log scale after 1)")
    legend_outside(axes[1])
    fig.tight_layout()
    return fig


def _classes_figure(s: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    styles = {"aligned": ("o-", "C0"), "global": ("s", "C1"), "random": ("^", "C2")}
    groups: dict[str, list[tuple[int, float, float]]] = {}
    for (labels, _, _), v in s["variants"].items():
        family = "aligned" if labels in ("coarse", "fine") else labels
        if family in styles:
            mean, se = v["probe_hard_error"]
            groups.setdefault(family, []).append((v["K"], mean, se or 0.0))
    for family, points in groups.items():
        points.sort()
        fmt, colour = styles[family]
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[2 * p[2] for p in points], fmt=fmt,
                    color=colour, ms=5, capsize=2, label=family)
    none = s["variants"].get(("none", None, 1))
    if none is not None:
        ax.axhline(none["probe_hard_error"][0], color="grey", ls=":", label="no pretraining")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of pretraining classes K")
    ax.set_ylabel("downstream hard-sample error (probe)")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _sweep_figure(field_name: str, sweep: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    for i, (label, points) in enumerate(sweep["lines"].items()):
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[2 * (p[2] or 0.0) for p in points],
                    fmt="o-", color=f"C{i % 10}", ms=4, capsize=2, label=label)
    ax.set_xlabel(field_name)
    ax.set_ylabel("downstream hard-sample error (probe)")
    legend_outside(ax)
    fig.tight_layout()
    return fig
