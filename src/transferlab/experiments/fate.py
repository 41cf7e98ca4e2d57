"""``fate``: transferability phase diagrams of deep linear networks ("Features are fate", paper 1).

One cell is one point ``(theta, gamma, sigma)`` of the paper's grid with ``instances`` independent
target data draws. ``mode`` chooses what a cell computes:

- ``"theory"``: the closed forms of :mod:`transferlab.theory.fate` at the cell's finite ``d``
  (scratch: inverse-Wishart mean, exact; linear transfer: the exact ridge probe at ``n`` for a
  population source, proportional-limit moments for a finite one; fine-tuning: the
  balancedness-corrected form with expected moments plugged in, which equals eq. 15 at
  ``sigma = 0``). A cell with ``|n - d| <= 1`` has no finite theory and fails with that reason.
- ``"simulate"``: gradient-descent-trained deep linear networks, :func:`transferlab.protocols.simulate_fate`.
- ``"both"``: the simulation plus the theory of the same cell (theory omitted, with a note, where it
  does not exist).

Rows (flat): ``converged`` (bool: every gradient-descent phase of the cell met its stopping rule,
excess train loss <= ``tol`` within ``max_steps``; true for theory cells, which train nothing);
``risk_<protocol>`` (mean over instances) and ``risk_<protocol>_instances`` (the list) for
simulations, with ``unconverged_<phase>`` (how many runs missed the stopping rule) and
``steps_<phase>`` (the step each run stopped at; one pretraining per cell) for the phases
``pretrain``, ``scratch``, ``finetune``; ``theory_risk_<protocol>``, ``theory_T_<transfer>`` (and
``theory_T_finetune_eq15``) for theory. :meth:`FateExperiment.analyze` leaves the simulations of
unconverged cells out of every aggregate (and counts them), pools replicates, forms ``T = R_sc - R_tx`` per instance
(paired: the protocols share each instance's data) with standard errors, and measures agreement with
theory away from the interpolation spike (``|n/d - 1| >= 0.05``: the scratch risk diverges at
n = d, eq. 8 of Tahir, Ganguli & Rotskoff 2024, and gradient descent there is slow and noisy): the
signed mean of ``sim - theory`` over cells with its pooled standard error (the per-cell risks are skewed, so with
few instances a per-cell "within 2 SE" count is only indicative). As in the authors' code, the
instances of a cell share the teachers, the init and the pretrained network (one source sample for a
finite source), so standard errors measure target-data variability only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from transferlab.errors import ConfigError
from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.figure import Figure

__all__ = ["PROTOCOLS", "FateConfig", "FateExperiment"]

Protocol = Literal["scratch", "linear_transfer", "finetune"]
PROTOCOLS: tuple[Protocol, ...] = ("scratch", "linear_transfer", "finetune")
_TRANSFERS: tuple[Protocol, ...] = ("linear_transfer", "finetune")
_SHORT = {"scratch": "sc", "linear_transfer": "lt", "finetune": "ft"}
_LONG = {v: k for k, v in _SHORT.items()}
#: Cells with |n/d - 1| below this are left out of agreement statistics (the noisy interpolation spike).
SPIKE_HALF_WIDTH = 0.05
#: The paper's slice angles (Fig. 1c).
SLICE_THETAS = (math.pi / 8, math.pi / 4, 3 * math.pi / 8)
#: The axes of one phase diagram; every other config field defines the setting it belongs to.
_DIAGRAM_FIELDS = ("theta", "gamma", "instances")
#: How a cell runs, not what it is: left out of the cell's identity (its key), of settings and of labels.
_RUN_FIELDS = ("device",)
#: Fields named in every setting's label; any other field is named only where it differs from its default.
_LABEL_FIELDS = ("mode", "sigma", "d", "source_gamma")


class FateConfig(ExperimentConfig):
    """One cell of the ``fate`` experiment. Angles in radians (a spec's ``unit = "pi/2"`` converts).

    ``device`` says where a simulation runs (``transferlab run --device cuda`` sets it); it is left out of
    the cell's identity and of its stored config, since every device runs the same gradient descent on the
    same data (drawn on the CPU), equal up to floating-point rounding.
    """

    theta: float = Field(description="source-target angle, radians")
    gamma: float = Field(gt=0, description="target sample ratio; n = round(gamma d)")
    sigma: float = Field(0.2, ge=0, description="target label-noise std")
    d: int = Field(100, ge=3, description="input dimension = width")
    layers: int = Field(2, ge=2, description="depth L")
    instances: int = Field(20, ge=1, description="target data draws per cell")
    protocols: tuple[Protocol, ...] = Field(PROTOCOLS, min_length=1, description="protocols to run")
    mode: Literal["theory", "simulate", "both"] = Field("both", description="closed forms, GD, or both")
    ridge: float = Field(0.1, ge=0, description="lambda of the linear-transfer probe")
    init_scale: float = Field(1e-3, gt=0, description="init scale alpha")
    source_gamma: float | None = Field(None, gt=0, description="n_s/d of a finite source; None = population")
    source_sigma: float = Field(0.0, ge=0, description="source label-noise std (finite source only)")
    lr: float | None = Field(None, gt=0, description="GD step size; None = per-instance automatic")
    max_steps: int = Field(20_000, ge=1, description="most GD steps per training phase")
    tol: float = Field(1e-6, gt=0, description="stop at least-squares minimum + tol")
    weight_decay: float = Field(0.0, ge=0, description="weight decay of scratch training")
    rank: int | None = Field(None, ge=1, description="rank truncation of the frozen features")
    dtype: Literal["float64", "float32"] = Field("float64", description="training precision")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$", exclude=True,
                        description="where simulations run: cpu, cuda or cuda:k (not part of the cell's identity)")

    @model_validator(mode="after")
    def _consistent(self) -> FateConfig:
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols must not repeat, got {self.protocols}")
        if self.source_gamma is None and self.source_sigma != 0:
            raise ValueError("source_sigma needs a finite source (set source_gamma)")
        if self.n < 1 or (self.source_n is not None and self.source_n < 1):
            raise ValueError("gamma d and source_gamma d must round to at least one sample")
        return self

    @field_validator("device")
    @classmethod
    def _device_exists(cls, device: str, info: ValidationInfo) -> str:
        """A simulation's device must exist here: checked when the spec loads, before any store is touched."""
        if device != "cpu" and info.data.get("mode") != "theory":
            from transferlab.protocols import resolve_device

            try:
                resolve_device(device)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return device

    @property
    def n(self) -> int:
        """Target sample size ``round(gamma d)``."""
        return round(self.gamma * self.d)

    @property
    def source_n(self) -> int | None:
        """Source sample size ``round(source_gamma d)``, or None for population pretraining."""
        return None if self.source_gamma is None else round(self.source_gamma * self.d)


class FateExperiment(Experiment):
    name = "fate"
    version = "2"
    Config = FateConfig
    description = "Features are fate: scratch vs linear transfer vs fine-tuning of deep linear nets."
    theory_only_figures = frozenset({"fate_ridge", "fate_finite_source", "fate_divergence"})

    def batch_key(self, config: FateConfig) -> Hashable:  # type: ignore[override]
        """Theory cells batch together; simulated cells batch by everything but ``(theta, sigma)``."""
        if config.mode == "theory":
            return ("theory",)
        fields = config.model_dump(exclude={"theta", "sigma", "gamma"})
        return ("simulate", config.n, *sorted((k, _hashable(v)) for k, v in fields.items()))

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        configs: list[FateConfig] = [c.config for c in cells]  # type: ignore[misc]
        rows: list[dict[str, Any]] = [{"n": cfg.n, "converged": True} for cfg in configs]
        if configs[0].mode != "theory":
            for row, sim in zip(rows, _simulate(cells, configs)):
                row.update(sim)
        for row, cfg in zip(rows, configs):
            if cfg.mode == "simulate":
                continue
            try:
                row.update(cell_theory(cfg))
            except ConfigError as exc:
                if cfg.mode == "theory":
                    raise
                row["theory_note"] = f"no finite-size theory: {exc}"
        return rows

    def analyze(self, table: ResultTable) -> Results:
        """Per setting: grids over ``(theta, gamma)``, a sorted per-cell table and agreement with theory.

        Simulated cells whose gradient descent did not meet its stopping rule (``converged`` false)
        are left out of every aggregate; their theory is kept, and the summary, the settings table
        and the figure captions say how many were excluded.
        """
        fields = [f for f in FateConfig.model_fields if f not in _DIAGRAM_FIELDS + _RUN_FIELDS]
        settings = [_analyze_setting(rows) for rows in table.group_by(*fields).values()]
        agreement = [r for s in settings for r in s["agreement"]]
        summary: dict[str, Any] = {"parameter settings (grids of theta x gamma)": len(settings)}
        simulated = [s for s in settings if s["has_sim"]]
        if simulated:
            summary["simulation width d"] = ", ".join(map(str, sorted({s["d"] for s in simulated})))
            summary["simulated cells excluded (gradient descent did not converge)"] = (
                f"{sum(s['excluded'] for s in simulated)} of {sum(s['cells'] for s in simulated)}"
            )
        for row in agreement:
            summary[f"agreement {row['setting']} {row['quantity']}"] = (
                f"sim - theory = {row['mean_diff']:+.4f} ± {row['mean_diff_se']:.4f} averaged over {row['cells']} cells; "
                f"mean |sim - theory| {row['mean_abs_diff']:.3f}; {row['within_2se']:.0%} of cells within 2 SE"
            )
        tables: dict[str, list[dict[str, Any]]] = {"settings": [_setting_summary(s) for s in settings]}
        if agreement:
            tables["agreement with theory (|n/d - 1| >= 0.05)"] = agreement
        for s in settings:
            tables[f"cells of {s['label']}"] = s["table"]
        return Results(tables=tables, summary=summary, data={"settings": settings})

    def figures(self, results: Results) -> dict[str, Figure]:
        return {name: draw() for name, _, draw in _figure_plan(results)}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {name: caption for name, caption, _ in _figure_plan(results)}


def _theory() -> ModuleType:
    """:mod:`transferlab.theory.fate`, imported on first use: it needs scipy, which a simulation-only run
    never touches (``transferlab run`` stays free of it until a theory cell or the report asks)."""
    from transferlab.theory import fate

    return fate


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------------
# computing cells


def cell_theory(cfg: FateConfig) -> dict[str, float]:
    """Closed-form expected risks and transferabilities of one cell, exact at its finite ``d``.

    Scratch: :func:`~transferlab.theory.fate.scratch_risk` at ``n/d``. Linear transfer: the exact
    ridge probe (:func:`~transferlab.theory.fate.linear_transfer_risk`, or its finite-source form).
    Fine-tuning: ``R_sc - T_ft`` with the balancedness-corrected ``T_ft`` (population source, or
    finite source: App. C with the scale ``c``, which is what gradient descent converges to); the
    paper's uncorrected eq. (15) / Thm C.1 values are stored beside it. Raises :class:`ConfigError`
    where no finite theory exists.
    """
    gamma, d = cfg.n / cfg.d, cfg.d
    gamma_s = None if cfg.source_n is None else cfg.source_n / d
    r_sc = float(_theory().scratch_risk(gamma, cfg.sigma, d))
    args = (cfg.theta, cfg.n, d, cfg.sigma, cfg.ridge, cfg.layers, gamma_s, cfg.source_sigma)
    r_lt = r_sc - float(_theory_transferability("linear_transfer", *args))
    t_ft = float(_theory_transferability("finetune", *args))
    out: dict[str, float] = {}
    if "finetune" in cfg.protocols:  # the paper's uncorrected forms, beside the corrected one
        if gamma_s is None:
            out["theory_T_finetune_eq15"] = float(_theory().finetune_transferability(cfg.theta, gamma))
        else:
            out["theory_T_finetune_eqC1"] = float(
                _theory().finetune_transferability_finite_source(cfg.theta, gamma, gamma_s, cfg.source_sigma, d)
            )
    risks = {"scratch": r_sc, "linear_transfer": r_lt, "finetune": r_sc - t_ft}
    for p in cfg.protocols:
        out[f"theory_risk_{p}"] = risks[p]
        if p != "scratch":
            out[f"theory_T_{p}"] = r_sc - risks[p]
    return out


def _simulate(cells: Sequence[Cell], configs: Sequence[FateConfig]) -> list[dict[str, Any]]:
    """GD simulation of a batch of cells of equal shape; per cell the mean and per-instance risks."""
    import torch

    from transferlab.protocols import simulate_fate

    cfg = configs[0]
    risks, training = simulate_fate(
        d=cfg.d,
        n=cfg.n,
        layers=cfg.layers,
        thetas=np.array([c.theta for c in configs]),
        sigmas=np.array([c.sigma for c in configs]),
        instances=cfg.instances,
        protocols=cfg.protocols,
        generators=[cell.torch_generator() for cell in cells],
        source_n=cfg.source_n,
        source_sigma=cfg.source_sigma,
        init_scale=cfg.init_scale,
        ridge=cfg.ridge,
        dtype=torch.float64 if cfg.dtype == "float64" else torch.float32,
        lr=cfg.lr,
        max_steps=cfg.max_steps,
        tol=cfg.tol,
        weight_decay=cfg.weight_decay,
        rank=cfg.rank,
        return_training=True,
        device=cfg.device,
    )
    rows: list[dict[str, Any]] = [{"converged": True} for _ in cells]
    for p, values in risks.items():
        for row, per_instance in zip(rows, np.asarray(values, dtype=np.float64)):
            row[f"risk_{p}"] = float(per_instance.mean())
            row[f"risk_{p}_instances"] = [float(v) for v in per_instance]
    for phase, result in training.items():
        converged = result.converged.numpy().reshape(len(cells), -1)
        steps = result.steps.numpy().reshape(len(cells), -1)
        for row, ok, used in zip(rows, converged, steps):
            row[f"unconverged_{phase}"] = int((~ok).sum())
            row[f"steps_{phase}"] = [int(v) for v in used]
            row["converged"] = row["converged"] and bool(ok.all())
    return rows


# --------------------------------------------------------------------------------------------------
# analysis


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _compact(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(
        value, float) else str(value)


def _without_simulation(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` less its simulated risks (kept: the config, the theory and the training record)."""
    return {k: v for k, v in row.items() if not k.startswith("risk_")}


def _analyze_setting(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Grids over (theta, gamma), the per-cell table and the agreement rows of one setting.

    A setting is a group of rows equal in every field but ``theta`` and ``gamma`` (and the training
    knobs). Grids are float arrays of shape ``(n_theta, n_gamma)``, NaN where a cell is missing or its
    simulation was excluded (gradient descent did not converge). The per-cell table is sorted by
    ``(theta, gamma)`` and holds only the columns this setting's mode produces.
    """
    from transferlab.report.plots import mean_se

    first = rows[0]
    excluded = [r for r in rows if not r["converged"]]
    rows = [r if r["converged"] else _without_simulation(r) for r in rows]
    has_sim, has_theory = first["mode"] != "theory", first["mode"] != "simulate"
    protocols = [p for p in PROTOCOLS if p in first["protocols"]]
    thetas = np.array(sorted({r["theta"] for r in rows}))
    gammas = np.array(sorted({r["gamma"] for r in rows}))
    label = f"{first['mode']}_sigma{first['sigma']:g}_d{first['d']}" + (
        "" if first["source_gamma"] is None else f"_src{first['source_gamma']:g}"
    ) + "".join(
        f"_{name}{_compact(first[name])}"
        for name, info in FateConfig.model_fields.items()
        if name not in _DIAGRAM_FIELDS + _LABEL_FIELDS + _RUN_FIELDS
        and _jsonable(first[name]) != _jsonable(info.get_default())
    )
    quantities = [f"risk_{p}" for p in protocols] + [
        f"T_{_SHORT[tx]}" for tx in _TRANSFERS if tx in protocols and "scratch" in protocols
    ]
    grids = {f"{q}{part}": np.full((thetas.size, gammas.size), np.nan) for q in quantities for part in ("", "_se", "_theory")}
    grids["n"] = np.full((thetas.size, gammas.size), np.nan)
    table: list[dict[str, Any]] = []
    for (theta, gamma), group in sorted(_group(rows, ("theta", "gamma")).items()):
        i, j = int(np.searchsorted(thetas, theta)), int(np.searchsorted(gammas, gamma))
        grids["n"][i, j] = group[0]["n"]
        out: dict[str, Any] = {"theta_deg": round(math.degrees(theta), 4), "gamma": gamma, "n": group[0]["n"]}
        per_instance: dict[str, np.ndarray] = {}
        for p in protocols:
            lists = [r[f"risk_{p}_instances"] for r in group if f"risk_{p}_instances" in r]
            if lists:
                per_instance[p] = np.concatenate([np.asarray(v, dtype=np.float64) for v in lists])
        estimates = {f"risk_{p}": per_instance[p] for p in per_instance}
        for tx in _TRANSFERS:
            if tx in per_instance and "scratch" in per_instance:
                estimates[f"T_{_SHORT[tx]}"] = per_instance["scratch"] - per_instance[tx]
        for q, values in estimates.items():
            mean, se = mean_se(values)
            grids[q][i, j] = mean
            out[q] = mean
            if se is not None:
                grids[f"{q}_se"][i, j] = se
                out[f"{q}_se"] = se
        th = group[0]
        for q in quantities:
            key = f"theory_{q}" if q.startswith("risk_") else f"theory_T_{_LONG[q[2:]]}"
            if key in th:
                grids[f"{q}_theory"][i, j] = th[key]
                out[f"{q}_theory"] = th[key]
        if "theory_T_finetune_eq15" in th:
            out["T_ft_eq15"] = th["theory_T_finetune_eq15"]
        if "theory_T_finetune_eqC1" in th:
            out["T_ft_eqC1"] = th["theory_T_finetune_eqC1"]
        notes = [th["theory_note"]] if "theory_note" in th else []
        if has_sim:
            unconverged = sum(not r["converged"] for r in group)
            out["excluded"] = unconverged
            if unconverged:
                notes.append(f"simulation excluded: gradient descent did not converge in {unconverged} of "
                             f"{len(group)} replicate(s)")
        if notes:
            out["note"] = "; ".join(notes)
        table.append(out)
    agreement = []
    if has_sim and has_theory:
        away = np.abs(grids["n"] / first["d"] - 1.0) >= SPIKE_HALF_WIDTH
        for q in quantities:
            sim, se, th = grids[q], grids[f"{q}_se"], grids[f"{q}_theory"]
            ok = away & np.isfinite(sim) & np.isfinite(th) & np.isfinite(se) & (se > 0)
            if not ok.any():
                continue
            diff, z = sim[ok] - th[ok], (sim[ok] - th[ok]) / se[ok]
            pooled_se = float(np.sqrt(np.sum(se[ok] ** 2)) / diff.size)
            agreement.append(
                {
                    "setting": label,
                    "quantity": q,
                    "cells": int(ok.sum()),
                    "mean_diff": float(diff.mean()),
                    "mean_diff_se": pooled_se,
                    "pooled_z": float(diff.mean() / pooled_se),
                    "mean_abs_diff": float(np.mean(np.abs(diff))),
                    "max_abs_diff": float(np.max(np.abs(diff))),
                    "within_2se": float(np.mean(np.abs(z) <= 2.0)),
                }
            )
    setting = {k: first[k] for k in FateConfig.model_fields if k not in _DIAGRAM_FIELDS + _RUN_FIELDS}
    setting.update(
        label=label, protocols=protocols, thetas=thetas, gammas=gammas, grids=grids, table=table,
        agreement=agreement, has_sim=has_sim, has_theory=has_theory, cells=len(rows), excluded=len(excluded),
        instances=sorted({r["instances"] for r in rows}),
    )
    return setting


def _group(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    return ResultTable(rows).group_by(*names)


def _span(values: np.ndarray, unit: str = "") -> str:
    """``"lo-hi<unit> (k values)"`` of a sorted 1-D grid, or the single value."""
    if values.size == 1:
        return f"{values[0]:.4g}{unit}"
    return f"{values[0]:.4g}-{values[-1]:.4g}{unit} ({values.size} values)"


def _setting_summary(setting: dict[str, Any]) -> dict[str, Any]:
    """One compact row of the settings table: the setting, its grid, and the sign of each transfer."""
    source = "population" if setting["source_gamma"] is None else (
        f"gamma_s {setting['source_gamma']:g}, sigma_s {setting['source_sigma']:g}")
    row: dict[str, Any] = {
        "setting": setting["label"], "mode": setting["mode"], "sigma": setting["sigma"], "d": setting["d"],
        "ridge": setting["ridge"], "source": source, "theta": _span(np.degrees(setting["thetas"]), " deg"),
        "gamma": _span(setting["gammas"]), "cells": setting["cells"],
    }
    if setting["has_sim"]:
        row["instances"] = ", ".join(map(str, setting["instances"]))
        row["excluded (not converged)"] = setting["excluded"]
    grids = setting["grids"]
    for tx in _TRANSFERS:
        q = f"T_{_SHORT[tx]}"
        if q in grids:
            values = grids[q] if setting["has_sim"] else grids[f"{q}_theory"]
            finite = values[np.isfinite(values)]
            row[f"cells with {q} > 0"] = f"{int((finite > 0).sum())} of {finite.size}"
    return row


# --------------------------------------------------------------------------------------------------
# figures

#: |T| below this counts as zero when drawing a simulation's zero contour: risks are in units of the
#: teacher's squared norm (1), and the stopping rule (excess train loss <= tol) leaves paired differences
#: of order 1e-4 at gamma > 1 that the standard errors resolve but that carry no phase information.
ZERO_FLOOR = 0.01
#: How near (grid steps) resolved cells of both signs must lie for a piece of the zero contour to be drawn.
CONTOUR_REACH = 1.5


def _figure_plan(results: Results) -> list[tuple[str, str, Callable[[], Figure]]]:
    """``(name, caption, draw)`` of every figure, in report order; the theory-only figures last."""
    plan: list[tuple[str, str, Callable[[], Figure]]] = []
    settings = results.data.get("settings", [])
    for s in settings:
        suffix = "" if len(settings) == 1 else f"_{s['label']}"
        transfers = [tx for tx in _TRANSFERS if f"T_{_SHORT[tx]}" in s["grids"]]
        for tx in transfers:
            plan.append((f"fate_phase_{_SHORT[tx]}{suffix}", _phase_caption(s, tx),
                         functools.partial(_phase_figure, s, tx)))
        if transfers:
            plan.append((f"fate_slices{suffix}", _slices_caption(s, transfers), functools.partial(_slices_figure, s)))
        if s["has_sim"] and s["has_theory"]:
            plan.append((f"fate_agreement{suffix}", _agreement_caption(s), functools.partial(_agreement_figure, s)))
    plan.append(("fate_ridge", _RIDGE_CAPTION, _ridge_figure))
    plan.append(("fate_finite_source", _finite_source_caption(), _finite_source_figure))
    plan.append(("fate_divergence", _DIVERGENCE_CAPTION, _divergence_figure))
    return plan


_THEORY_ONLY = "Theory only (closed forms of the paper; the same for every store, independent of its cells). "


def _setting_words(setting: dict[str, Any]) -> str:
    source = "pretrained on the population source loss" if setting["source_gamma"] is None else (
        f"pretrained on a finite source of n_s = {setting['source_gamma']:g} d samples with label noise "
        f"σ_s = {setting['source_sigma']:g}")
    return (f"label noise σ = {setting['sigma']:g}, depth L = {setting['layers']}, probe ridge "
            f"λ = {setting['ridge']:g}, width d = {setting['d']}, {source}")


def _excluded_words(setting: dict[str, Any]) -> str:
    return (f"Cells whose gradient descent did not meet its stopping rule (train loss within tol = "
            f"{setting['tol']:g} of its minimum in {setting['max_steps']} steps) are excluded and left blank: "
            f"{setting['excluded']} of {setting['cells']}.")


def _phase_caption(setting: dict[str, Any], tx: Protocol) -> str:
    q = f"T_{_SHORT[tx]}"
    name = "linear transfer" if tx == "linear_transfer" else "fine-tuning"
    text = (f"Transferability of {name}, {q} = R_scratch - R_{_SHORT[tx]} (red: transfer helps; blue: it hurts; "
            f"white: no difference), over the source-target angle θ and the sample ratio γ = n/d; "
            f"{_setting_words(setting)}. ")
    if setting["has_sim"]:
        text += (f"Left: gradient-descent-trained networks at the sweep's cells ({'/'.join(map(str, setting['instances']))} "
                 f"target data draws per cell). Solid line: the simulation's zero contour, drawn only where it is "
                 f"resolved, that is between cells with |{q}| > {ZERO_FLOOR:g} and within {CONTOUR_REACH:g} grid "
                 f"steps of both a cell with {q} > max(2 SE, {ZERO_FLOOR:g}) and a cell with {q} < -max(2 SE, "
                 f"{ZERO_FLOOR:g}); where {q} is zero within noise no contour is drawn. Dashed: the theory's zero contour. {_excluded_words(setting)} ")
    else:
        text += "Left: the closed form at the sweep's cells, with the theory's zero contour dashed. "
    text += (f"Right: the exact finite-size theory at d = {setting['d']} on a fine grid (blank where no finite "
             f"theory exists, |n - d| <= 1). Both panels span exactly the sampled range of θ and γ.")
    if tx == "finetune" and setting["source_gamma"] is None:
        text += " Dotted horizontal line: θ = 60°, the paper's break-even angle (eq. 15)."
    return text


def _slices_caption(setting: dict[str, Any], transfers: list[Protocol]) -> str:
    angles = ", ".join(f"{math.degrees(float(setting['thetas'][i])):.1f}°" for i in _slice_rows(setting))
    what = " and ".join(f"T_{_SHORT[tx]}" for tx in transfers)
    text = (f"{what} against the sample ratio γ = n/d at θ = {angles} (the grid angles nearest π/8, π/4, 3π/8; "
            f"the paper's Fig. 1c); {_setting_words(setting)}. Lines: the exact finite-size theory, one colour per "
            f"angle. ")
    if setting["has_sim"]:
        text += (f"Points: simulation means over the cell's target data draws with ±2 SE bars. "
                 f"{_excluded_words(setting)} ")
    else:
        text += "Points: the closed form at the sweep's cells. "
    text += "Dotted vertical line: γ = 1, the interpolation threshold."
    if "linear_transfer" in transfers:
        text += " The linear-transfer panel is clipped to [-1, 1]: the scratch risk diverges at γ = 1."
    return text


def _agreement_caption(setting: dict[str, Any]) -> str:
    return (f"Simulated mean risk against the exact finite-size theory, one panel per protocol and one point per "
            f"cell with ±2 SE bars; {_setting_words(setting)}. Blue: cells used in the agreement statistics; grey: "
            f"cells within the interpolation spike (|n/d - 1| < {SPIKE_HALF_WIDTH}), left out of them. Dashed: "
            f"simulation = theory. {_excluded_words(setting)}")


_RIDGE_CAPTION = _THEORY_ONLY + (
    "Linear-transfer risk against the ridge λ of the last-layer probe at γ = 0.5, for θ = 22.5° (blue) and 45° "
    "(orange): solid, the n → ∞ limit (eq. 13); dashed, the exact risk at n = 250 (d = 500) with label noise "
    "σ = 0.2. The risk rises with λ: ridge on the last layer never helps linear transfer.")

_DIVERGENCE_CAPTION = _THEORY_ONLY + (
    "Left: T_lt (blue, left axis) and the KL divergence between the source and target task distributions (red, "
    "right axis) over θ from 0° to 180°, at γ = 0.5 and σ = 0.2. Right: T_lt against the KL divergence, coloured "
    "by θ; black dots mark θ = 0°, 90° and 180°. KL rises monotonically while T_lt goes +0.54 → -0.46 → +0.54: "
    "distribution distance does not predict transfer.")


def _finite_source_caption() -> str:
    angles = " and ".join(
        f"{math.degrees(float(_theory().finite_source_break_even_angle(gs, 0.2))):.1f}° (γ_s = {gs})"
        for gs in _FINITE_SOURCES)
    return _THEORY_ONLY + (
        "Fine-tuning transferability T_ft (red: helps; blue: hurts) from a finite, noisy source (Appendix C, "
        "Thm C.1) over the angle θ and the target sample ratio γ < 1: left, a source of n_s = 0.5 d samples; right, "
        f"n_s = 1.5 d; source label noise σ_s = 0.2. Dashed: the break-even contour T_ft = 0, at {angles}; "
        "dotted: 60°, the break-even angle for an infinite source.")


def _fine_theory(setting: dict[str, Any], tx: Protocol, thetas: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Theory ``T_tx`` on a fine ``(theta, gamma)`` grid at the setting's ``d`` (exact finite size),
    masked (NaN) where it does not exist (``|n - d| <= 1``, or ``n <= 2`` for an unregularised probe).

    Returns shape ``(thetas.size, gammas.size)``.
    """
    d, sigma, ridge, layers = setting["d"], setting["sigma"], setting["ridge"], setting["layers"]
    gamma_s, sigma_s = setting["source_gamma"], setting["source_sigma"]
    n = gammas * d
    valid = (np.abs(n - d) > 1) & ((n > 2) | (ridge > 0))
    out = np.full((thetas.size, gammas.size), np.nan)
    g, th = gammas[valid], thetas[:, None]
    source = None if gamma_s is None else round(gamma_s * d) / d
    out[:, valid] = _theory_transferability(tx, th, g * d, d, sigma, ridge, layers, source, sigma_s)
    return out


def _theory_transferability(tx: Protocol, theta: Any, n: Any, d: int, sigma: float, ridge: float, layers: int,
                            gamma_s: float | None, sigma_s: float) -> np.ndarray:
    """``T_tx = R_sc - R_tx`` in closed form at finite ``d`` (broadcasting over ``theta`` and ``n``):
    linear transfer by the exact ridge probe, fine-tuning with the balancedness scale; from a
    population source (``gamma_s is None``) or a finite one (``n_s / d = gamma_s``, noise ``sigma_s``)."""
    gamma = np.asarray(n, dtype=np.float64) / d
    if tx == "linear_transfer":
        if gamma_s is None:
            r_lt = _theory().linear_transfer_risk(theta, n, sigma, ridge)
        else:
            r_lt = _theory().linear_transfer_risk_finite_source(theta, n, sigma, gamma_s, sigma_s, ridge, layers)
        return _theory().scratch_risk(gamma, sigma, d) - r_lt
    if gamma_s is None:
        return _theory().finetune_transferability_corrected(theta, gamma, sigma, d, layers)
    return _theory().finetune_transferability_finite_source_corrected(theta, gamma, gamma_s, sigma_s, sigma, d, layers)


def _fine_axes(setting: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    thetas, gammas = setting["thetas"], setting["gammas"]
    lo, hi = (thetas.min(), thetas.max()) if thetas.size > 1 else (0.0, math.pi / 2)
    glo, ghi = (gammas.min(), gammas.max()) if gammas.size > 1 else (0.05, 2.0)
    return np.linspace(lo, hi, 121), np.linspace(glo, ghi, 241)


def _phase_figure(setting: dict[str, Any], tx: Protocol) -> Figure:
    """Left: ``T_tx`` at the sweep's cells (simulation if present, else theory) with the simulation's
    resolved zero contour (solid) and the theory's (dashed); right: theory on a fine grid. Diverging map
    centred on 0; both panels span the sampled range."""
    from matplotlib.figure import Figure

    from transferlab.report.plots import diverging_norm, draw_map, resolved_zero_contour, zero_contour

    q = f"T_{_SHORT[tx]}"
    grids = setting["grids"]
    observed = grids[q] if setting["has_sim"] else grids[f"{q}_theory"]
    fine_t, fine_g = _fine_axes(setting)
    fine = _fine_theory(setting, tx, fine_t, fine_g)
    norm = diverging_norm(np.concatenate([observed[np.isfinite(observed)], fine[np.isfinite(fine)]]))
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    cell_g, cell_t = setting["gammas"], np.degrees(setting["thetas"])
    mesh = draw_map(left, cell_g, cell_t, observed, norm)
    if setting["has_sim"]:
        resolved_zero_contour(left, cell_g, cell_t, observed, grids[f"{q}_se"], floor=ZERO_FLOOR,
                              reach=CONTOUR_REACH, color="0.15", lw=1.2)
    zero_contour(left, fine_g, np.degrees(fine_t), fine, colors="k", linewidths=1.6, linestyles="--")
    what = f"simulation, d = {setting['d']}" if setting["has_sim"] else f"theory at the cells, d = {setting['d']}"
    solid = "solid: resolved simulation T = 0; " if setting["has_sim"] else ""
    left.set_title(f"{q}: {what}\n({solid}dashed: theory T = 0)")
    draw_map(right, fine_g, np.degrees(fine_t), fine, norm)
    zero_contour(right, fine_g, np.degrees(fine_t), fine, colors="k", linewidths=1.6, linestyles="--")
    if tx == "finetune" and setting["source_gamma"] is None:
        for ax in (left, right):
            ax.axhline(60.0, color="0.4", lw=0.8, ls=":")
    right.set_title(f"{q}: theory (exact at d = {setting['d']})")
    for ax in (left, right):
        ax.set_xlabel(r"$\gamma = n/d$")
    left.set_ylabel(r"$\theta$ (degrees)")
    fig.colorbar(mesh, ax=[left, right], label=f"{q} = R_sc - R_{_SHORT[tx]}  (> 0: transfer helps)")
    fig.suptitle(_setting_title(setting))
    return fig


def _setting_title(setting: dict[str, Any]) -> str:
    source = "population source" if setting["source_gamma"] is None else (
        f"finite source gamma_s = {setting['source_gamma']:g}, sigma_s = {setting['source_sigma']:g}"
    )
    return f"sigma = {setting['sigma']:g}, L = {setting['layers']}, ridge = {setting['ridge']:g}, {source}"


def _slice_rows(setting: dict[str, Any]) -> list[int]:
    """Row indices of the grid angles nearest pi/8, pi/4, 3pi/8 (without repeats, increasing)."""
    return sorted({int(np.argmin(np.abs(setting["thetas"] - t))) for t in SLICE_THETAS})


def _slices_figure(setting: dict[str, Any]) -> Figure:
    """``T_lt`` and ``T_ft`` against ``gamma`` at the grid angles nearest pi/8, pi/4, 3pi/8 (Fig. 1c):
    theory curves and simulation points with 2-SE bars (theory cells in theory mode)."""
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    grids, thetas, gammas = setting["grids"], setting["thetas"], setting["gammas"]
    fine_g = _fine_axes(setting)[1]
    transfers = [tx for tx in _TRANSFERS if f"T_{_SHORT[tx]}" in grids]
    fig = Figure(figsize=(6.5 * len(transfers), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(transfers)))
    for ax, tx in zip(axes, transfers):
        q = f"T_{_SHORT[tx]}"
        for k, (color, i) in enumerate(zip(("tab:blue", "tab:orange", "tab:green"), _slice_rows(setting))):
            theta = float(thetas[i])
            curve = _fine_theory(setting, tx, np.array([theta]), fine_g)[0]
            ax.plot(fine_g, curve, color=color, lw=1.5, label=f"theory, θ = {math.degrees(theta):.1f}°")
            if setting["has_sim"]:
                se = np.nan_to_num(grids[f"{q}_se"][i])
                ax.errorbar(gammas, grids[q][i], yerr=2 * se, fmt="o", ms=4, color=color, capsize=2,
                            label="simulation ± 2 SE" if k == 0 else None)
            else:
                ax.plot(gammas, grids[f"{q}_theory"][i], "o", ms=4, color=color,
                        label="theory at the cells" if k == 0 else None)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.axvline(1.0, color="0.6", lw=0.6, ls=":")
        if tx == "linear_transfer":
            ax.set_ylim(-1.0, 1.0)  # the scratch spike at gamma = 1 is unbounded
        ax.set_xlim(float(fine_g[0]), float(fine_g[-1]))
        ax.set_xlabel(r"$\gamma = n/d$")
        ax.set_ylabel(q)
        ax.set_title(f"{q} vs gamma, d = {setting['d']}")
        legend_outside(ax, fontsize=7)
    fig.suptitle(_setting_title(setting))
    return fig


def _agreement_figure(setting: dict[str, Any]) -> Figure:
    """Simulated mean risk against theory per protocol (2-SE bars), spike cells in grey."""
    from matplotlib.figure import Figure

    grids = setting["grids"]
    protocols = setting["protocols"]
    fig = Figure(figsize=(4.0 * len(protocols), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(protocols)))
    spike = np.abs(grids["n"] / setting["d"] - 1.0) < SPIKE_HALF_WIDTH
    for ax, p in zip(axes, protocols):
        sim, se, th = grids[f"risk_{p}"], np.nan_to_num(grids[f"risk_{p}_se"]), grids[f"risk_{p}_theory"]
        for mask, color, label in ((~spike, "tab:blue", "cells (mean ± 2 SE)"),
                                   (spike, "0.6", f"|n/d - 1| < {SPIKE_HALF_WIDTH} (not in the statistics)")):
            ax.errorbar(th[mask], sim[mask], yerr=2 * se[mask], fmt="o", ms=3, color=color, capsize=1.5, label=label)
        finite = np.concatenate([th[np.isfinite(th) & ~spike], sim[np.isfinite(sim) & ~spike]])
        top = float(finite.max()) * 1.05 if finite.size else 1.0
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="simulation = theory")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("theory risk")
        ax.set_ylabel("simulated risk")
        ax.set_title(p)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"simulation vs theory, d = {setting['d']}")
    return fig


def _ridge_figure() -> Figure:
    """Linear-transfer risk against the probe's ridge ``lambda`` at ``gamma = 0.5`` (notebook figure):
    eq. (13) (n -> inf) and the exact finite-n risk at n = 250 (d = 500), sigma = 0.2."""
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    lam = np.linspace(0.0, 0.5, 101)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for theta, color in ((math.pi / 8, "tab:blue"), (math.pi / 4, "tab:orange")):
        label = f"θ = {math.degrees(theta):.1f}°"
        ax.plot(lam, _theory().linear_transfer_risk_ridge(theta, lam), color=color,
                label=f"eq. 13 (n → ∞), {label}")
        ax.plot(lam, _theory().linear_transfer_risk(theta, 250, 0.2, lam), "--", color=color, lw=1,
                label=f"exact n = 250, σ = 0.2, {label}")
    ax.set_xlim(0.0, 0.5)
    ax.set_xlabel(r"ridge $\lambda$")
    ax.set_ylabel(r"$R_{lt}^{\lambda}$")
    ax.set_title("ridge on the last layer never helps linear transfer (theory, γ = 0.5)")
    legend_outside(ax)
    return fig


#: The source sizes gamma_s = n_s / d of the finite-source figure.
_FINITE_SOURCES = (0.5, 1.5)


def _finite_source_figure() -> Figure:
    """Fine-tuning phase diagrams from a finite noisy source (App. C): ``gamma_s = 0.5, 1.5``,
    ``sigma_s = 0.2``; break-even angle 57.3 deg against 60 deg for an infinite source."""
    from matplotlib.figure import Figure

    from transferlab.report.plots import diverging_norm, draw_map, zero_contour

    thetas = np.linspace(0.0, math.pi / 2, 181)
    gammas = np.linspace(0.01, 0.99, 197)
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    values = [_theory().finetune_transferability_finite_source(thetas[:, None], gammas, gs, 0.2)
              for gs in _FINITE_SOURCES]
    norm = diverging_norm(np.concatenate([v.ravel() for v in values]))
    for ax, gs, v in zip(axes, _FINITE_SOURCES, values):
        mesh = draw_map(ax, gammas, np.degrees(thetas), v, norm)
        zero_contour(ax, gammas, np.degrees(thetas), v, colors="k", linewidths=1.6, linestyles="--")
        star = math.degrees(float(_theory().finite_source_break_even_angle(gs, 0.2)))
        ax.axhline(60.0, color="0.4", lw=0.8, ls=":")
        ax.set_xlabel(r"$\gamma = n/d$")
        ax.set_title(f"T_ft, finite source gamma_s = {gs}, sigma_s = 0.2\nbreak-even {star:.1f} deg (dashed)",
                     fontsize=10)
    axes[0].set_ylabel(r"$\theta$ (degrees)")
    fig.colorbar(mesh, ax=list(axes), label="T_ft (> 0: fine-tuning helps)")
    return fig


def _divergence_figure() -> Figure:
    """Fig. 4a: over theta in [0, pi] at gamma = 0.5, sigma = 0.2, KL(p_s || p_t) rises monotonically
    while T_lt = R_sc - sin^2(theta) goes +0.54 -> -0.46 -> +0.54."""
    from matplotlib.figure import Figure

    thetas = np.linspace(0.0, math.pi, 361)
    kl = _theory().task_kl(thetas, 0.2)
    t_lt = _theory().linear_transferability(thetas, 0.5, 0.2)
    fig = Figure(figsize=(12, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(np.degrees(thetas), t_lt, color="tab:blue")
    left.axhline(0.0, color="k", lw=0.8)
    left.set_xlim(0.0, 180.0)
    left.set_xlabel(r"$\theta$ (degrees)")
    left.set_ylabel("T_lt", color="tab:blue")
    twin = left.twinx()
    twin.plot(np.degrees(thetas), kl, color="tab:red")
    twin.set_ylabel("KL(p_s || p_t)", color="tab:red")
    left.set_title("KL is monotone in theta, transferability is not")
    points = right.scatter(kl, t_lt, c=np.degrees(thetas), cmap="viridis", s=6)
    marks = np.array([0.0, math.pi / 2, math.pi])
    right.plot(_theory().task_kl(marks, 0.2), _theory().linear_transferability(marks, 0.5, 0.2), "ko", ms=5,
               label="θ = 0°, 90°, 180°")
    right.axhline(0.0, color="k", lw=0.8)
    right.set_xlabel("KL(p_s || p_t)")
    right.set_ylabel("T_lt")
    right.set_title("gamma = 0.5, sigma = 0.2: T_lt against KL")
    fig.colorbar(points, ax=right, label=r"$\theta$ (degrees)")
    fig.legend(*right.get_legend_handles_labels(), loc="outside lower right", fontsize=8)
    return fig
