"""``transfer_scaling``: scaling laws for transfer on real language models (Hernandez et al. 2021).

Byte-level decoder-only transformers (:func:`transferlab.nets.transformer.transformer`) of several
sizes N (non-embedding parameters) on two real corpora (:mod:`transferlab.tasks.text`): English prose
(the Python documentation's text) for pretraining and Python source (the standard library) as the
target. docs/models/transfer_scaling.md states the protocol and what is ours and what the paper's.

A cell is one training run, by ``regime``:

* ``pretrain``: the model of ``size`` trained on the English training split, early-stopped on the
  English validation split (``pretrain_max_steps`` at most). It is trained once per (spec seed,
  replicate, size, recipe) and cached on disk by the digest of those fields
  (:mod:`transferlab.experiments._source_cache`, a weights-only ``state_dict``); the cell's row holds
  its English losses and its zero-shot Python losses (D_F = 0).
* ``scratch``: a fresh model trained on D = ``data_size`` bytes of Python, early-stopped on the Python
  validation split: one point of the scratch curve L_sc(N, D).
* ``finetune``: the pretrained model of the same size (from the cache, or trained now when the cache
  misses: cells stay independent) trained on D_F = ``data_size`` bytes of Python with the same recipe
  (a fresh warm-up and decay; peak rate times ``finetune_lr_scale``, 1 by default as in the paper).

The D bytes are ``TextCorpus.sample("train", D, chunk=4096, seed=replicate)``: chunks from the whole
training split, nested across D (a smaller set is the start of a larger one). Every run uses
:func:`transferlab.train.lm.fit_lm`'s recipe (Adam, linear warm-up, cosine decay, peak rate
lr(N) of Kaplan et al. 2020 unless ``lr`` is given; validation every ``eval_every`` steps on
``val_tokens`` targets spread over the validation split; stop ``patience`` evaluations after the last
improvement by more than ``min_delta`` nats, so a run on a plateau stops too; the best weights kept). The
analysed loss is the *test* loss of the kept weights (``test_tokens`` targets spread over the Python test
split), so the early-stopping choice and the measurement use different files. A run still improving at its
last step is recorded as not converged.

Randomness: the initial weights of a scratch model come from a generator seeded by (spec seed,
replicate, size, context, instances) only, so the scratch runs of one size differ in their data, not
their initialisation (common random numbers along the scratch curve); the pretraining initialisation is
seeded by the source's digest; the window draws come from the cell's own generator. ``instances`` I > 1
trains I seeds as one batched program (each its own windows; scratch: its own initial weights) and the
row's losses are their means (per-instance lists beside them).

Analysis (:func:`analyze_table`): the rows become a :class:`~transferlab.scaling.LossTable` (N, D,
regime, loss) and :func:`transferlab.scaling.analyze_transfer` measures the effective data D_E by
inverting each size's fitted scratch curve, D_T = D_E - D_F, applies the low-data cut D_F <= 0.1 D(N),
and fits D_T = k D_F^alpha N^beta with cluster-bootstrap intervals (whole model sizes resampled).
The summary checks the paper's qualitative findings on these numbers (:func:`transfer_claims`).
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import model_validator

from transferlab.errors import ConfigError, DataError, FitError
from transferlab.experiments._source_cache import digest, load_or_train
from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from transferlab.nets.blocks import BlockNet
    from transferlab.nets.transformer import TransformerSize
    from transferlab.scaling import LossTable, TransferAnalysis
    from transferlab.train.lm import LMResult, LMSettings

__all__ = [
    "PAPER_TEXT_TO_PYTHON",
    "TransferScalingConfig",
    "TransferScalingExperiment",
    "analyze_table",
    "loss_table",
    "parse_size",
    "transfer_claims",
]

Regime = Literal["pretrain", "scratch", "finetune"]

#: Table 1 of Hernandez et al. (2021), text -> Python: (k, alpha, beta).
PAPER_TEXT_TO_PYTHON = {"k": 1.9e4, "alpha": 0.18, "beta": 0.38}

#: chunk length of the Python training samples (TextCorpus.sample): much longer than any context
_CHUNK = 4096
_SIZE = re.compile(r"d(\d+)L(\d+)H(\d+)")


def parse_size(size: str) -> TransformerSize:
    """The shape named ``size``: a name of :data:`~transferlab.nets.transformer.TRANSFORMER_SIZES`
    (``"xs"`` .. ``"xl"``) or ``"d<width>L<layers>H<heads>"`` (e.g. ``"d32L1H2"``).

    Raises:
        ConfigError: neither form, or a shape the family refuses (width not divisible by heads).
    """
    from transferlab.nets.transformer import TRANSFORMER_SIZES, TransformerSize

    if size in TRANSFORMER_SIZES:
        return TRANSFORMER_SIZES[size]
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise ConfigError(f"size must be one of {list(TRANSFORMER_SIZES)} or 'd<width>L<layers>H<heads>' "
                          f"(e.g. 'd32L1H2'), got {size!r}")
    return TransformerSize(*(int(g) for g in match.groups()))


class TransferScalingConfig(ExperimentConfig):
    """One training run (module docstring).

    Attributes:
        regime: ``pretrain`` (English), ``scratch`` or ``finetune`` (Python).
        size: the transformer shape (:func:`parse_size`).
        data_size: Python training bytes, D (scratch) or D_F (finetune); ``None`` for ``pretrain``.
        context: T, tokens per window; batch_size: B, windows per step.
        max_steps: most steps of a scratch or fine-tuning run; pretrain_max_steps: of pretraining.
        warmup_steps, lr, final_lr_fraction: the schedule (:class:`~transferlab.train.lm.LMSettings`);
            ``lr = None``: Kaplan et al.'s lr(N).
        finetune_lr_scale: the fine-tuning peak learning rate over the scratch one (1: the same recipe, as the
            paper, whose hyper-parameters were tuned for training from scratch).
        eval_every, patience: validation cadence and early-stopping patience (evaluations).
        min_delta: nats a validation loss must gain to reset the patience count (0: any strict gain).
        val_tokens, test_tokens: validation / test targets per evaluation (spread over the split).
        pretrain_tokens: English training bytes used (``None``: the whole split).
        instances: seeds trained as one batched program.
    """

    regime: Regime
    size: str
    data_size: int | None = None
    context: int = 64
    batch_size: int = 32
    max_steps: int = 4000
    pretrain_max_steps: int = 4000
    warmup_steps: int = 100
    lr: float | None = None
    final_lr_fraction: float = 0.1
    finetune_lr_scale: float = 1.0
    eval_every: int = 100
    patience: int = 4
    min_delta: float = 0.0
    val_tokens: int = 32768
    test_tokens: int = 131072
    pretrain_tokens: int | None = None
    instances: int = 1

    @model_validator(mode="after")
    def _consistent(self) -> TransferScalingConfig:
        from transferlab._checks import check_int, check_real

        parse_size(self.size)
        if self.regime == "pretrain":
            if self.data_size is not None:
                raise ConfigError("data_size is the Python training set of a scratch or finetune run; "
                                  "a pretrain run takes none (leave it out)")
        else:
            check_int(self.data_size, "data_size", low=self.context + 1,
                      note=f"Python training bytes; at least one window of context + 1 = {self.context + 1}")
        check_int(self.context, "context", low=1)
        check_int(self.instances, "instances", low=1)
        check_int(self.test_tokens, "test_tokens", low=self.context, note="at least one window of context")
        check_int(self.pretrain_tokens, "pretrain_tokens", low=self.context + 1, optional=True)
        check_int(self.max_steps, "max_steps", low=1)
        check_real(self.finetune_lr_scale, "finetune_lr_scale", low=0.0, low_open=True)
        check_int(self.pretrain_max_steps, "pretrain_max_steps", low=1)
        check_int(self.warmup_steps, "warmup_steps", low=0, high=min(self.max_steps, self.pretrain_max_steps) - 1,
                  note="below max_steps and pretrain_max_steps")
        for steps in (self.max_steps, self.pretrain_max_steps):
            self.settings(steps)  # LMSettings checks every other knob of the recipe
        return self

    def settings(self, max_steps: int) -> LMSettings:
        """The :class:`~transferlab.train.lm.LMSettings` of a run of at most ``max_steps`` steps."""
        from transferlab.train.lm import LMSettings

        return LMSettings(batch_size=self.batch_size, context=self.context, max_steps=max_steps,
                          warmup_steps=self.warmup_steps, lr=self.lr, final_lr_fraction=self.final_lr_fraction,
                          eval_every=self.eval_every, patience=self.patience, min_delta=self.min_delta,
                          val_tokens=self.val_tokens)


class TransferScalingExperiment(Experiment):
    name = "transfer_scaling"
    version = "1"
    Config = TransferScalingConfig
    description = ("Scaling laws for transfer (Hernandez et al. 2021): byte-level transformers pretrained on English, "
                   "fine-tuned on Python, against from-scratch Python training; D_T = k D_F^alpha N^beta")

    def batch_key(self, config: TransferScalingConfig) -> Hashable:  # type: ignore[override]
        """One group per run (replicates of a config share it): stacking runs of one size as instances of one
        network measured no faster per run on 2 CPU cores (docs/models/transfer_scaling.md), so the shipped
        specs run one cell per batch; ``instances`` batches seeds inside a cell instead."""
        return (config.regime, config.size, config.data_size)

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        return [_run_cell(cell) for cell in cells]

    def analyze(self, table: ResultTable) -> Results:
        return analyze_table(table)

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


# --------------------------------------------------------------------------------------------------
# running one cell
# --------------------------------------------------------------------------------------------------


def _generator(fields: dict[str, Any]) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(int(digest(fields)[:15], 16))


def _network(cfg: TransferScalingConfig, instances: int, generator: torch.Generator) -> BlockNet:
    from transferlab.nets.transformer import transformer
    from transferlab.tasks.text import VOCAB_SIZE

    return transformer(parse_size(cfg.size), vocab=VOCAB_SIZE, context=cfg.context, instances=instances,
                       generator=generator)


def _source_fields(cell: Cell, cfg: TransferScalingConfig, fingerprint: str) -> dict[str, Any]:
    """Everything that determines a pretrained source (its cache key)."""
    return {"kind": TransferScalingExperiment.name, "kind_version": TransferScalingExperiment.version,
            "role": "english source", "seed": cell.seed, "replicate": cell.replicate, "size": cfg.size,
            "settings": dataclasses.asdict(cfg.settings(cfg.pretrain_max_steps)),
            "pretrain_tokens": cfg.pretrain_tokens, "test_tokens": cfg.test_tokens, "english": fingerprint}


#: Pretrained sources already loaded in this process, by digest.
_LOADED: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}


def _source(cell: Cell, cfg: TransferScalingConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The one-instance state of the English-pretrained model and facts about it: memory, disk, or trained now."""
    from transferlab.tasks.text import load_corpus

    english = load_corpus("english")
    fields = _source_fields(cell, cfg, english.fingerprint)
    key = digest(fields)
    return load_or_train(key, lambda: _pretrain(cfg, fields), memory=_LOADED, keep=1)


def _pretrain(cfg: TransferScalingConfig, fields: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from transferlab.tasks.text import load_corpus
    from transferlab.train.lm import fit_lm, lm_loss

    started = time.monotonic()
    english, python = load_corpus("english"), load_corpus("python")
    train = english.train if cfg.pretrain_tokens is None else english.train[: cfg.pretrain_tokens]
    if train.size <= cfg.context:
        raise DataError(f"the English training split has {train.size} bytes; pretraining needs more than the "
                        f"context ({cfg.context})")
    net = _network(cfg, 1, _generator({**fields, "use": "init"}))
    record = fit_lm(net, train, english.validation, cfg.settings(cfg.pretrain_max_steps),
                    generator=_generator({**fields, "use": "windows"}))
    facts = {
        "english_val_loss": float(record.best_val_loss[0]),
        "english_test_loss": float(lm_loss(net, english.test, context=cfg.context, max_targets=cfg.test_tokens)[0]),
        "python_val_loss": float(lm_loss(net, python.validation, context=cfg.context,
                                         max_targets=cfg.val_tokens)[0]),
        "python_test_loss": float(lm_loss(net, python.test, context=cfg.context, max_targets=cfg.test_tokens)[0]),
        "best_step": int(record.best_step[0]), "steps": int(record.steps), "converged": bool(record.converged[0]),
        "tokens_seen": int(record.stop_step[0]) * record.tokens_per_step, "english_train_tokens": int(train.size),
        "peak_lr": record.peak_lr, "seconds": round(time.monotonic() - started, 2),
    }
    return {k: v.detach()[:1].clone() for k, v in net.state_dict().items()}, facts


def _history(record: LMResult) -> list[list[float]]:
    """Per instance, its validation losses at the evaluations while it was active (finite values only)."""
    history = record.val_history.T.tolist()
    return [[v for v in h if np.isfinite(v)] for h in history]


def _run_cell(cell: Cell) -> dict[str, Any]:
    from transferlab.nets.transformer import non_embedding_params
    from transferlab.tasks.text import load_corpus
    from transferlab.train.lm import fit_lm, kaplan_lr, lm_loss

    cfg: TransferScalingConfig = cell.config  # type: ignore[assignment]
    started = time.monotonic()
    shape = parse_size(cfg.size)
    row: dict[str, Any] = {"N": non_embedding_params(shape), "d_model": shape.d_model, "n_layers": shape.n_layers,
                           "n_heads": shape.n_heads}
    if cfg.regime == "pretrain":
        _, facts = _source(cell, cfg)
        return {**row, **{f"pretrain_{k}" if k in ("best_step", "steps", "seconds", "peak_lr") else k: v
                          for k, v in facts.items()}, "converged": [facts["converged"]],
                "unconverged": int(not facts["converged"]), "seconds": round(time.monotonic() - started, 2)}
    python = load_corpus("python")
    assert cfg.data_size is not None
    if cfg.data_size > python.train.size:
        raise DataError(f"data_size = {cfg.data_size} exceeds the Python training split ({python.train.size} bytes)")
    train = python.sample("train", cfg.data_size, chunk=_CHUNK, seed=cell.replicate)
    I = cfg.instances
    if cfg.regime == "scratch":
        net = _network(cfg, I, _generator({"role": "scratch init", "seed": cell.seed, "replicate": cell.replicate,
                                           "size": cfg.size, "context": cfg.context, "instances": I}))
    else:
        state, facts = _source(cell, cfg)
        net = _network(cfg, I, _generator({"role": "unused draw"}))  # every weight is overwritten below
        net.load_state_dict({k: v.expand(I, *v.shape[1:]).clone() for k, v in state.items()})
        row.update(source_english_val_loss=facts["english_val_loss"], source_python_val_loss=facts["python_val_loss"],
                   source_python_test_loss=facts["python_test_loss"], source_converged=facts["converged"])
    # one stream per instance: each draws its own windows (a shared stream would give every instance the same)
    settings = cfg.settings(cfg.max_steps)
    if cfg.regime == "finetune" and cfg.finetune_lr_scale != 1.0:
        peak = cfg.lr if cfg.lr is not None else kaplan_lr(row["N"])
        settings = dataclasses.replace(settings, lr=cfg.finetune_lr_scale * peak)
    record = fit_lm(net, [train] * I if I > 1 else train, python.validation, settings,
                    generator=cell.torch_generator(1))
    test = lm_loss(net, python.test, context=cfg.context, max_targets=cfg.test_tokens)
    tokens = record.tokens_per_step
    converged = record.converged.tolist()
    row.update(
        best_val_loss=float(record.best_val_loss.mean()), best_val_loss_instances=record.best_val_loss.tolist(),
        test_loss=float(test.mean()), test_loss_instances=test.tolist(),
        initial_val_loss=float(record.val_history[0].mean()),
        train_loss_instances=record.train_loss.tolist(),
        best_step_instances=record.best_step.tolist(), stop_step_instances=record.stop_step.tolist(),
        steps=record.steps, tokens_per_step=tokens,
        tokens_seen_instances=[s * tokens for s in record.stop_step.tolist()],
        epochs_to_best=float(record.best_step.double().mean()) * tokens / cfg.data_size,
        eval_steps=list(record.eval_steps), val_history_instances=_history(record), peak_lr=record.peak_lr,
        converged=converged, unconverged=sum(not c for c in converged),
        seconds=round(time.monotonic() - started, 2),
    )
    return row


# --------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------

_LOSSES = ("test_loss", "best_val_loss")


def loss_table(table: ResultTable, *, loss: str = "test_loss") -> LossTable:
    """The tidy :class:`~transferlab.scaling.LossTable` of the scratch and fine-tuned rows: model size = the
    row's N, data size = its ``data_size``, regime, loss = its ``loss`` column (``test_loss`` or
    ``best_val_loss``). Raises :class:`DataError` when there are no such rows."""
    from transferlab.scaling import LossTable

    if loss not in _LOSSES:
        raise ConfigError(f"loss must be one of {_LOSSES}, got {loss!r}")
    rows = [r for r in table.rows if r["regime"] in ("scratch", "finetune")]
    if not rows:
        raise DataError("the store holds no scratch or finetune rows to analyze")
    return LossTable.from_columns([r["N"] for r in rows], [r["data_size"] for r in rows],
                                  [r["regime"] for r in rows], [r[loss] for r in rows])


def _measured(analysis: TransferAnalysis) -> np.ndarray:
    """Mask of the fine-tuned points whose D_E is a value, not a bound: the loss lies inside the fitted scratch
    curve's range over the observed D (statuses ok and no_transfer, and high_data points inside the range)."""
    eff = analysis.effective
    out = np.zeros(eff.loss.size, dtype=bool)
    for i, (n, loss) in enumerate(zip(eff.model_size, eff.loss, strict=True)):
        curve = eff.curves[float(n)]
        out[i] = curve.loss(curve.d_max) <= loss <= curve.loss(curve.d_min) and loss > curve.plateau
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (needs >= 2 distinct x)."""
    return float(np.polyfit(x, y, 1)[0])


def transfer_claims(table: LossTable, analysis: TransferAnalysis | None) -> dict[str, Any]:
    """The paper's qualitative findings checked on measured numbers (each entry a short sentence and a verdict).

    * ``D_T > 0 in the low-data regime``: of the low-data fine-tuned points whose effective data could be
      measured or bounded, how many transferred (D_E > D_F; censored-high and unreachable points count as
      transfer: D_E exceeds every scratch run);
    * ``beta > 0``: the fitted beta and its interval;
    * ``multiplier falls with D_F``: per model size, the slope of log((D_F + D_T)/D_F) against log D_F over
      the points with a measured D_E (>= 2 needed), and the fitted alpha < 1;
    * ``scratch plateaus in N, fine-tuned keeps falling``: at each data size of both regimes, the loss change
      from the second-largest to the largest N, scratch against fine-tuned;
    * ``ossification``: the (N, D_F) where the fine-tuned loss is above the scratch loss at D = D_F.
    """
    claims: dict[str, Any] = {}
    if analysis is not None:
        eff = analysis.effective
        low = eff.data_size <= eff.low_data_fraction * eff.data_for_plateau
        measurable = low & np.isin(eff.status, ("ok", "no_transfer", "censored_high", "unreachable"))
        positive = measurable & ~(eff.status == "no_transfer")
        claims["D_T > 0 in the low-data regime"] = (
            f"{'held' if measurable.any() and positive.sum() > measurable.sum() / 2 else 'did not hold'}: "
            f"{int(positive.sum())} of {int(measurable.sum())} points with D_F <= {eff.low_data_fraction:g} D(N) measured "
            "or bounded have D_T > 0 "
            f"({int(np.sum(low & (eff.status == 'censored_low')))} more censored low)")
        fit = analysis.fit
        lo, hi = fit.intervals.get("beta", (np.nan, np.nan))
        verdict = "held" if lo > 0 else ("not resolved (interval includes 0)" if hi > 0 else "did not hold")
        claims["beta > 0"] = f"{verdict}: beta = {fit.beta:.3f}, {_interval(fit, 'beta')}"
        measured = _measured(analysis)
        slopes = {}
        for n in np.unique(eff.model_size):
            m = measured & (eff.model_size == n)
            if np.unique(eff.data_size[m]).size >= 2:
                slopes[float(n)] = _slope(np.log(eff.data_size[m]), np.log(eff.effective_data[m] / eff.data_size[m]))
        falling = sum(s < 0 for s in slopes.values())
        claims["multiplier (D_F + D_T)/D_F falls with D_F"] = (
            f"{'held' if slopes and falling == len(slopes) and fit.alpha < 1 else 'partly' if falling else 'did not hold'}: "
            f"fitted alpha = {fit.alpha:.3f} (multiplier ~ D_F^(alpha - 1)); slope of log multiplier vs log D_F "
            f"negative at {falling} of {len(slopes)} sizes with >= 2 measured points ("
            + ", ".join(f"N={n:.3g}: {s:+.2f}" for n, s in slopes.items()) + ")")
    sizes = table.model_sizes()
    if sizes.size >= 2:
        big, second = sizes[-1], sizes[-2]
        rows = []
        for d in np.unique(table.data_size):
            change = {}
            for regime in ("scratch", "finetune"):
                values = [float(np.mean(table.loss[(table.regime == regime) & (table.model_size == n) &
                                                   (table.data_size == d)])) if np.any(
                    (table.regime == regime) & (table.model_size == n) & (table.data_size == d)) else np.nan
                          for n in (second, big)]
                change[regime] = values[1] - values[0]
            if np.isfinite(change["scratch"]) and np.isfinite(change["finetune"]):
                rows.append((d, change["scratch"], change["finetune"]))
        holds = [r for r in rows if r[2] < r[1]]
        if rows:
            claims["scratch plateaus in N while fine-tuned keeps falling"] = (
                f"{'held' if len(holds) == len(rows) else 'partly' if holds else 'did not hold'}: from N={second:.3g} "
                f"to N={big:.3g}, the fine-tuned loss fell by more than the scratch loss at {len(holds)} of {len(rows)} "
                "data sizes (" + ", ".join(f"D={d:.3g}: scratch {s:+.3f}, fine-tuned {f:+.3f}" for d, s, f in rows)
                + " nats/token)")
    worse = []
    for n in sizes:
        for d in np.unique(table.data_size):
            sc = table.loss[(table.regime == "scratch") & (table.model_size == n) & (table.data_size == d)]
            ft = table.loss[(table.regime == "finetune") & (table.model_size == n) & (table.data_size == d)]
            if sc.size and ft.size and ft.mean() > sc.mean():
                worse.append(f"N={n:.3g} at D_F={d:.3g} ({ft.mean():.3f} > {sc.mean():.3f})")
    claims["ossification (fine-tuned worse than scratch at D = D_F)"] = (
        "appeared: " + "; ".join(worse) if worse else "did not appear at any measured (N, D_F)")
    return claims


def _interval(fit: Any, name: str) -> str:
    if name not in fit.intervals:
        return "no interval"
    lo, hi = fit.intervals[name]
    return f"{100 * fit.level:.0f} % CI [{lo:.3g}, {hi:.3g}]"


def analyze_table(
    table: ResultTable,
    *,
    loss: str = "test_loss",
    method: str = "direct",
    n_boot: int = 1000,
    low_data_fraction: float = 0.1,
    plateau_fraction: float = 0.99,
    extrapolation_decades: float = 0.0,
    seed: int = 0,
) -> Results:
    """Results of a ``transfer_scaling`` store: the runs, effective data, the fitted law with cluster-bootstrap
    intervals next to the paper's text -> Python values, and the qualitative claims (:func:`transfer_claims`).

    The knobs are :func:`transferlab.scaling.analyze_transfer`'s (the paper's cut: ``low_data_fraction`` 0.1,
    ``plateau_fraction`` 0.99). A fit that cannot be made (too few usable points, a scratch curve that rises
    with D) is reported in the summary with its reason, never raised: the runs and the loss figure remain.
    The law is fitted twice when ``low_data_fraction`` < 1: with that cut ("paper's cut") and with none ("no
    cut": every point with D_F <= D(N)); the figures and claims use the first of the two whose fit is
    determined (status not ``too_few_points``), else the first that could be fitted (``data["cut"]`` names it).
    """
    from transferlab.scaling import ScalingWarning, analyze_transfer

    runs = sorted((r for r in table.rows if r["regime"] != "pretrain"),
                  key=lambda r: (r["N"], r["regime"], r["data_size"], r["replicate"]))
    pretrain = sorted((r for r in table.rows if r["regime"] == "pretrain"), key=lambda r: (r["N"], r["replicate"]))
    summary: dict[str, Any] = {}
    unconverged = sum(r["unconverged"] for r in table.rows)
    total = sum(len(r["converged"]) for r in table.rows)
    summary["runs that hit max_steps still improving (kept, flagged)"] = f"{unconverged} of {total}"
    tables: dict[str, list[dict[str, Any]]] = {}
    if pretrain:
        tables["English pretraining (one per size)"] = [
            {"size": r["size"], "N": r["N"], "English val loss": r["english_val_loss"],
             "English test loss": r["english_test_loss"], "Python zero-shot test loss": r["python_test_loss"],
             "steps": r["pretrain_steps"], "converged": r["converged"][0], "seconds": r["pretrain_seconds"]}
            for r in pretrain]
    tables["runs"] = [
        {"size": r["size"], "N": r["N"], "regime": r["regime"], "D": r["data_size"], "replicate": r["replicate"],
         "best val loss": r["best_val_loss"], "test loss": r["test_loss"], "best step": r["best_step_instances"][0],
         "steps": r["steps"], "epochs to best": r["epochs_to_best"], "converged": all(r["converged"]),
         "seconds": r["seconds"]} for r in runs]
    data: dict[str, Any] = {"analysis": None, "pretrain": pretrain, "loss": loss}
    if not runs:
        return Results(tables=tables, summary=summary, data=data)
    losses = loss_table(table, loss=loss)
    data["table"] = losses
    paper = PAPER_TEXT_TO_PYTHON
    cuts = {"paper's cut": low_data_fraction} | ({"no cut": 1.0} if low_data_fraction < 1.0 else {})
    fits: dict[str, TransferAnalysis] = {}
    for label, fraction in cuts.items():
        what = f"D_F <= {fraction:g} D(N)" if fraction < 1.0 else "every point with D_F <= D(N)"
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always", ScalingWarning)
                fits[label] = analyze_transfer(losses, method=method, n_boot=n_boot, low_data_fraction=fraction,
                                               plateau_fraction=plateau_fraction,
                                               extrapolation_decades=extrapolation_decades, seed=seed)
        except (FitError, DataError) as exc:
            summary[f"transfer law, {label} ({what})"] = f"not made: {exc}"
            continue
        for i, w in enumerate(x for x in seen if issubclass(x.category, ScalingWarning)):
            summary[f"{label}: scaling warning {i + 1}"] = str(w.message)
        fit = fits[label].fit
        summary[f"transfer law, {label} ({what})"] = (
            f"alpha = {fit.alpha:.3f} ({_interval(fit, 'alpha')}), beta = {fit.beta:.3f} ({_interval(fit, 'beta')}), "
            f"k = {fit.k:.3g} (log10 k {_interval(fit, 'log10_k')}); {fit.method} fit on {fit.n_points} points over "
            f"{fit.n_model_sizes} sizes, status {fit.status}; points by status: "
            + ", ".join(f"{k}: {v}" for k, v in fits[label].effective.counts().items()))
        tables.setdefault("transfer law", []).extend(
            {"cut": label, "parameter": name, "fitted": value, "CI low": fit.intervals.get(key, (np.nan,))[0],
             "CI high": fit.intervals.get(key, (np.nan, np.nan))[1], "paper (text -> Python)": paper_value}
            for name, key, value, paper_value in (("alpha", "alpha", fit.alpha, paper["alpha"]),
                                                  ("beta", "beta", fit.beta, paper["beta"]),
                                                  ("log10 k", "log10_k", fit.log10_k, float(np.log10(paper["k"])))))
    summary["paper (text -> Python, Table 1)"] = f"alpha = {paper['alpha']}, beta = {paper['beta']}, k = {paper['k']:.2g}"
    # figures and claims: the paper's cut when its fit is determined (>= 10 points over >= 3 sizes, scaling's
    # recommended minimum: status not "too_few_points"), else the fit without the cut when that one is
    determined = [label for label, found in fits.items() if found.fit.status != "too_few_points"]
    label = determined[0] if determined else next(iter(fits), None)
    analysis = fits.get(label) if label is not None else None
    data["analysis"], data["cut"] = analysis, label
    if analysis is not None:
        summary["figures and claims use"] = "the fit with the paper's cut" if label == "paper's cut" else (
            "the fit with no cut (the paper's cut left too few points for a determined fit)")
        tables["effective data (fine-tuned runs)"] = analysis.effective.rows()
        tables["scratch curves L(D) = L_ref (u + v (D/D_ref)^-q)^p"] = [
            {"N": c.model_size, "plateau L_inf": c.plateau, "D(N)": c.data_for_plateau(plateau_fraction), "q": c.q,
             "p": c.p, "rms log residual": c.rms_log_residual, "status": c.status}
            for c in analysis.effective.curves.values()]
    for name, text in transfer_claims(losses, analysis).items():
        summary[f"claim: {name}"] = text
    return Results(tables=tables, summary=summary, data=data)


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def _fraction_vs_n_figure(analysis: TransferAnalysis) -> Figure:
    """Fraction of effective data from transfer D_T/(D_F + D_T) against N, one colour per D_F, with the fitted
    law (eq. B.2) as lines: the paper's Fig. 2."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from transferlab.report.plots import legend_outside
    from transferlab.scaling import fraction_from_transfer

    eff, law = analysis.effective, analysis.fit.law
    fig = Figure(figsize=(7.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    groups = np.unique(eff.data_size)
    cmap = colormaps["plasma"]
    grid = np.geomspace(eff.model_size.min(), eff.model_size.max(), 100)
    handles = []
    for j, d_f in enumerate(groups):
        color = cmap(0.85 * j / max(1, groups.size - 1))
        m = eff.data_size == d_f
        finite = m & np.isfinite(eff.effective_data) & (eff.effective_data > 0)
        frac = eff.transferred_data / eff.effective_data
        ax.plot(eff.model_size[m & eff.usable], frac[m & eff.usable], "o", ms=4, color=color)
        ax.plot(eff.model_size[finite & ~eff.usable], frac[finite & ~eff.usable], "o", ms=4, mfc="none", color=color)
        ax.plot(grid, fraction_from_transfer(d_f, grid, law), color=color, lw=1)
        handles.append(Line2D([], [], color=color, marker="o", ms=4, lw=1, label=f"D_F={d_f:.3g}"))
    handles += [Line2D([], [], color="0.3", marker="o", ms=4, ls="", label="used in the fit"),
                Line2D([], [], color="0.3", marker="o", ms=4, ls="", mfc="none", label="left out (bound or cut)"),
                Line2D([], [], color="0.3", lw=1, label="fitted law, eq. B.2")]
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("fraction from transfer D_T / (D_F + D_T)")
    ax.set_title("Fraction of effective data from transfer (English -> Python)", fontsize=9)
    legend_outside(ax, handles=handles, fontsize=7)
    return fig


def _loss_vs_n_figure(table: LossTable, pretrain: list[dict[str, Any]], loss: str) -> Figure:
    """Scratch (solid, dots) and fine-tuned (dashed, crosses) loss against N at fixed data sizes (up to four of
    those both regimes share), and the pretrained model's zero-shot Python loss (grey, D_F = 0)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from transferlab.report.plots import legend_outside

    fig = Figure(figsize=(7.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    shared = np.intersect1d(table.data_size[table.regime == "scratch"], table.data_size[table.regime == "finetune"])
    if shared.size > 4:
        shared = shared[np.unique(np.round(np.linspace(0, shared.size - 1, 4)).astype(int))]
    cmap = colormaps["viridis"]
    handles = []
    for j, d in enumerate(shared):
        color = cmap(0.9 * j / max(1, shared.size - 1))
        for regime, style in (("scratch", {"ls": "-", "marker": "o"}), ("finetune", {"ls": "--", "marker": "x"})):
            m = (table.regime == regime) & (table.data_size == d)
            sizes = np.unique(table.model_size[m])
            ax.plot(sizes, [table.loss[m & (table.model_size == n)].mean() for n in sizes], color=color, ms=4, **style)
        handles.append(Line2D([], [], color=color, lw=1, label=f"D = D_F = {d:.3g}"))
    if pretrain:
        ns = sorted({r["N"] for r in pretrain})
        zero = [np.mean([r["python_test_loss"] for r in pretrain if r["N"] == n]) for n in ns]
        ax.plot(ns, zero, color="0.5", ls=":", marker="s", ms=3)
        handles.append(Line2D([], [], color="0.5", ls=":", marker="s", ms=3, label="pretrained, zero-shot (D_F = 0)"))
    handles += [Line2D([], [], color="0.3", ls="-", marker="o", ms=4, label="from scratch"),
                Line2D([], [], color="0.3", ls="--", marker="x", ms=4, label="fine-tuned from English")]
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel(f"Python {loss.replace('_', ' ')} (nats/byte)")
    ax.set_title("Scratch vs fine-tuned loss against model size at fixed data", fontsize=9)
    legend_outside(ax, handles=handles, fontsize=7)
    return fig


def _figure_plan(results: Results) -> list[tuple[str, str, Any]]:
    """(name, caption, draw) for every figure the results support."""
    from transferlab.scaling.figures import loss_curves_figure, transfer_captions, transferred_data_figure

    plan: list[tuple[str, str, Any]] = []
    table = results.data.get("table")
    if table is None:
        return plan
    loss = results.data["loss"]
    analysis = results.data["analysis"]
    if analysis is not None:
        captions = transfer_captions(analysis)
        plan.append(("transferred_data", captions["scaling_transferred_data"] + (
            " Byte-level transformers pretrained on English prose and fine-tuned on Python (D_F in bytes); "
            f"D_E from each size's fitted scratch curve; fit: {results.data['cut']}."),
                     lambda: transferred_data_figure(analysis)))
        plan.append(("fraction_vs_n", (
            "Fraction of the effective data that comes from transfer, D_T / (D_F + D_T), against model size N, one "
            "colour per fine-tuning size D_F (the paper's Fig. 2), with the fitted law's eq. B.2 as lines. Filled: "
            "points in the fit; hollow: points left out (high-data cut, no transfer, or censored bounds). "
            f"Fit: k = {analysis.fit.k:.3g}, alpha = {analysis.fit.alpha:.3f}, beta = {analysis.fit.beta:.3f}."),
                     lambda: _fraction_vs_n_figure(analysis)))
        plan.append(("loss_curves", captions["scaling_loss_curves"], lambda: loss_curves_figure(analysis)))
    plan.append(("loss_vs_n", (
        f"Python {loss.replace('_', ' ')} against model size N at fixed data (the paper's Fig. 3): models trained "
        "from scratch on D bytes (solid, dots) and English-pretrained models fine-tuned on D_F = D bytes (dashed, "
        "crosses), one colour per data size (up to four of those both regimes ran); grey squares: the pretrained "
        "models before fine-tuning. A scratch line that flattens while the dashed one keeps falling is the "
        "paper's data-limited scratch plateau; a dashed line above its solid one is ossification."),
                 lambda: _loss_vs_n_figure(table, results.data["pretrain"], loss)))
    return plan
