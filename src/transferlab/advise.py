"""``advise``: should I transfer from this source to my data, and how deep? Measured, within a budget.

Given a source network (``pretrained:<name>``, ``trained:<data set>`` or ``module:<pkg.mod>:<function>``, resolved
as the ``transfer`` experiment resolves them: :func:`transferlab.experiments.transfer.build_source`) and target
data (a packaged data set name or ``npz:<path>``), :func:`advise`

1. computes the cheap transferability predictors on the source's frozen features (after block L) of N
   class-balanced target training images: LogME, H-score (Ledoit-Wolf shrinkage), NLEEP, GBC, TransRate, and
   LEEP / NCE where the source has its own classifier head (:mod:`transferlab.measures`). They are reported, not
   used in the decision: mapping a score to an error needs a calibration over a model zoo;
2. runs a budgeted defrosting sweep: at target sizes n_1 < ... < n_m = N (geometric, from
   max(2C, N/8)), every k = 0..L (blocks 1..k frozen at the source weights, the rest fine-tuned with a new
   head: :func:`transferlab.protocols.transfer.freeze_first_k`) and training from scratch, ``seeds`` seeds each
   (each seed its own class-balanced subset, the same for every k at one n: paired comparisons); scratch also
   at 2N and 4N where the data allow, so that the scratch curve can be inverted above N. The step budget per
   training run is fitted to ``budget_minutes`` from timed pilot runs (fine-tuning at N, 10 and 30 steps after
   a warm-up); runs above N get n / N times the steps (the same number of epochs as at N);
3. fits, per k and for scratch, a power law of the test error in the target size by least squares on the
   logarithms of every seed's error (:func:`fit_power_law`): ``log e = a - b log n``;
4. answers at n = N, from the fitted curves:

   - k* = argmin_k e_k(N), and the set of every k with ``e_k(N) - e_k*(N) <= 2 SE`` (SE of the difference,
     the two fits treated as independent: :func:`k_star_set`);
   - the gain over scratch ``G = e_scratch(N) - e_k*(N)`` with a 95 % interval (Student t with the smaller
     fit's degrees of freedom); transfer if the interval lies above 0, scratch if below, "either" otherwise
     (:func:`transfer_decision`);
   - the effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer", App. B): the target
     size D_E at which the fitted scratch curve reaches the transfer error, ``D_E = exp((a_s - log e_k*(N)) /
     b_s)``, and ``D_T = D_E - N``, with a 95 % interval from a parametric bootstrap of both fits; outside the
     measured scratch sizes it is reported as a bound, "beyond the measured range", never extrapolated
     (:func:`effective_data`).

What is the papers' and what is ours: the effective-data definition D_T = D_E - D_F is Hernandez et al.'s; they
invert a scratch curve measured over a wide range of D with a saturating law (:mod:`transferlab.scaling`). With
the 3-6 scratch sizes a budgeted sweep affords, the advisor uses a two-parameter power law (ours), which cannot
show a plateau: the inversion is trusted only inside the measured sizes. The defrosting sweep over k follows
Gerace et al. (2023, "Optimal transfer protocol by incremental layer defrosting"); the 2-SE set, the t interval
and the three-way decision are ours.

Errors equal to 0 (a perfect test score) are floored at half a test example, ``0.5 / n_test``, before the
logarithm (recorded in ``Advice.error_floor``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError, TrainingDiverged, TransferlabError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from transferlab.experiments.transfer import TransferConfig
    from transferlab.nets.blocks import BlockNet

__all__ = [
    "Advice",
    "EffectiveData",
    "PowerLawFit",
    "advice_figures",
    "advise",
    "effective_data",
    "fit_power_law",
    "k_star_set",
    "transfer_decision",
    "write_advice_html",
]

#: Steps of the two timed pilot runs that size the step budget (after a warm-up run of the first size).
PILOT_STEPS = (10, 30)
#: Fewest and most optimizer steps per training run the budget may choose.
MIN_STEPS, MAX_STEPS = 50, 2000
#: Parametric-bootstrap draws for the effective-data interval (its percentiles move by < 1 % of the
#: interval's width between seeds at this size).
BOOTSTRAP_DRAWS = 4000
#: Default target size when none is given (packaged data sets hold far more than a quick sweep needs).
DEFAULT_TARGET_CAP = 1000


# --------------------------------------------------------------------------------------------------
# the statistics (pure functions of arrays; unit-tested on constructed curves)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """``log e = intercept - slope * log n``, fitted by ordinary least squares.

    Attributes:
        intercept, slope: a and b (b > 0: the error falls with n).
        cov: (2, 2) covariance of (a, b): ``s^2 (X^T X)^{-1}`` with X = [1, -log n] and
            ``s^2 = sum r_i^2 / (m - 2)`` the residual variance.
        dof: m - 2 residual degrees of freedom (m points).
        n_min, n_max: the smallest and largest fitted size.
    """

    intercept: float
    slope: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    dof: int
    n_min: float
    n_max: float

    def log_error(self, n: float) -> tuple[float, float]:
        """The fitted ``log e(n)`` and its standard error ``sqrt(x0^T cov x0)``, ``x0 = (1, -log n)``."""
        x0 = np.array([1.0, -math.log(n)])
        var = float(x0 @ np.array(self.cov) @ x0)
        return self.intercept - self.slope * math.log(n), math.sqrt(max(var, 0.0))

    def error(self, n: float) -> tuple[float, float]:
        """The fitted error ``exp(log e(n))`` and its standard error by the delta method, ``e * SE(log e)``."""
        mean, se = self.log_error(n)
        return math.exp(mean), math.exp(mean) * se

    def size_for_error(self, error: float) -> float:
        """The inverse, ``n = exp((a - log e) / b)``; ``inf`` when the curve does not fall (b <= 0)."""
        if self.slope <= 0:
            return math.inf
        return math.exp(min((self.intercept - math.log(error)) / self.slope, 700.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields plus the standard errors of a and b."""
        return {"intercept": self.intercept, "slope": self.slope, "intercept_se": math.sqrt(self.cov[0][0]),
                "slope_se": math.sqrt(self.cov[1][1]), "dof": self.dof, "n_min": self.n_min, "n_max": self.n_max}


def fit_power_law(sizes: Sequence[float] | np.ndarray, errors: Sequence[float] | np.ndarray, *,
                  floor: float) -> PowerLawFit:
    """Fit ``log max(e, floor) = a - b log n`` to the runs ``(sizes[i], errors[i])`` (shapes ``(m,)``).

    Every seed's error is one point (not the mean per size), so the residual variance includes the seed
    spread. Needs m >= 3 points at >= 2 distinct sizes; ``floor`` > 0 stands in for an error of 0.
    """
    n = np.asarray(sizes, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if n.ndim != 1 or n.shape != e.shape:
        raise DataError(f"sizes and errors must be 1-D arrays of one length, got shapes {n.shape} and {e.shape}")
    floor = check_real(floor, "floor", low=0.0, low_open=True)
    if n.size < 3 or np.unique(n).size < 2:
        raise DataError(f"a power-law fit needs >= 3 runs at >= 2 distinct sizes, got {n.size} runs at "
                        f"{np.unique(n).size} size(s)")
    if not (np.all(np.isfinite(n)) and np.all(n > 0)):
        raise DataError("sizes must be finite and > 0")
    if not (np.all(np.isfinite(e)) and np.all(e >= 0)):
        raise DataError("errors must be finite and >= 0")
    design = np.column_stack([np.ones_like(n), -np.log(n)])
    y = np.log(np.maximum(e, floor))
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = n.size - 2
    cov = float(resid @ resid) / dof * np.linalg.inv(design.T @ design)
    return PowerLawFit(intercept=float(coef[0]), slope=float(coef[1]),
                       cov=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
                       dof=dof, n_min=float(n.min()), n_max=float(n.max()))


def k_star_set(estimates: dict[int, tuple[float, float]], *, width: float = 2.0) -> tuple[int, list[int]]:
    """k* = the k of the smallest estimated error, and every k within ``width`` standard errors of it.

    ``estimates``: k -> (error, SE). k is in the set when ``e_k - e_k* <= width * sqrt(SE_k^2 + SE_k*^2)``
    (the SE of the difference of two independent estimates); ties go to the larger k (fewer trained blocks).
    """
    if not estimates:
        raise DataError("no fitted transfer curve to choose k from")
    best = min(sorted(estimates, reverse=True), key=lambda k: estimates[k][0])
    e_best, se_best = estimates[best]
    within = [k for k, (e, se) in sorted(estimates.items()) if e - e_best <= width * math.hypot(se, se_best)]
    return best, within


def transfer_decision(gain: float, se: float, dof: int, *, level: float = 0.95) -> tuple[str, tuple[float, float]]:
    """``("transfer" | "scratch" | "either", (low, high))``: the ``level`` interval ``gain -+ t * se`` of the
    gain over scratch (Student t with ``dof`` degrees of freedom); transfer when it lies above 0, scratch
    when below, either when it contains 0."""
    from scipy import stats

    check_int(dof, "dof", low=1)
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    low, high = gain - t * se, gain + t * se
    decision = "transfer" if low > 0 else "scratch" if high < 0 else "either"
    return decision, (low, high)


@dataclass(frozen=True)
class EffectiveData:
    """What the source is worth in target data at size N (Hernandez et al. 2021's D_T = D_E - D_F).

    Attributes:
        status: ``"ok"`` (D_E inside the measured scratch sizes), ``"beyond_measured_range"`` (scratch
            does not reach the transfer error within them: D_E > the largest, a lower bound) or
            ``"below_measured_range"`` (D_E < the smallest: an upper bound).
        effective: D_E (``status == "ok"``), else the bound (the range's edge).
        transferred: D_T = D_E - N (or the bound's).
        ci: 95 % interval of D_T; an end outside the measured range is None (unbounded there).
        measured_range: (smallest, largest) scratch size measured.
    """

    status: str
    effective: float
    transferred: float
    ci: tuple[float | None, float | None]
    measured_range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``ci`` ends outside the measured range are None)."""
        return dataclasses.asdict(self)


def effective_data(scratch: PowerLawFit, log_error: float, log_error_se: float, target_size: float, *,
                   seed: int = 0, draws: int = BOOTSTRAP_DRAWS, level: float = 0.95) -> EffectiveData:
    """Invert the scratch curve at the transfer error ``exp(log_error)`` (its SE on the log scale given).

    D_E = ``scratch.size_for_error(e)``; the interval: ``draws`` parametric-bootstrap draws of (a_s, b_s)
    from the normal with the fit's covariance and of log e from N(log_error, se^2), inverted draw by draw
    (a draw with b_s <= 0 never reaches the error: D_E = inf), then the empirical quantiles of D_E - N.
    """
    lo_n, hi_n = scratch.n_min, scratch.n_max
    d_e = scratch.size_for_error(math.exp(log_error))
    rng = np.random.default_rng(seed)
    ab = rng.multivariate_normal([scratch.intercept, scratch.slope], np.array(scratch.cov), size=draws,
                                 method="eigh")
    log_e = log_error + log_error_se * rng.standard_normal(draws)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_d = np.where(ab[:, 1] > 0, (ab[:, 0] - log_e) / ab[:, 1], np.inf)
    q = np.quantile(log_d, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    ci = tuple(float(math.exp(v)) - target_size if math.log(lo_n) <= v <= math.log(hi_n) else None for v in q)
    if d_e > hi_n:
        status, value = "beyond_measured_range", hi_n
    elif d_e < lo_n:
        status, value = "below_measured_range", lo_n
    else:
        status, value = "ok", d_e
    return EffectiveData(status=status, effective=float(value), transferred=float(value - target_size),
                         ci=(ci[0], ci[1]), measured_range=(lo_n, hi_n))


# --------------------------------------------------------------------------------------------------
# the advice
# --------------------------------------------------------------------------------------------------


@dataclass
class Advice:
    """The advisor's answer and everything behind it (see the module docstring). Errors are test error
    rates (1 - accuracy) on the target's test split; "k" keys are the numbers of frozen blocks.

    Attributes:
        model, data: what was asked. target_size: N. n_blocks: L. block_names: the source's blocks.
        decision: ``"transfer"``, ``"scratch"`` or ``"either"``.
        k_star: the best k at N; k_star_set: every k within 2 SE of it.
        errors_at_n: ``"scratch"`` and ``"k=0".."k=L"`` -> (fitted error at N, SE).
        gain, gain_se, gain_ci: e_scratch(N) - e_k*(N), its SE and 95 % interval.
        effective: the effective data transferred (:class:`EffectiveData`).
        predictors: name -> score, or None with the reason in ``predictor_notes``.
        fits: curve name -> :class:`PowerLawFit`; cells: one dict per sweep cell (n, protocol, k,
            errors per seed, mean, se, unconverged runs, seconds, status).
        sweep: sizes, seeds, steps, budget, timing. error_floor: 0.5 / n_test. notes: caveats in words.
    """

    model: str
    data: str
    target_size: int
    n_classes: int
    n_blocks: int
    block_names: list[str]
    decision: str
    k_star: int
    k_star_set: list[int]
    errors_at_n: dict[str, tuple[float, float]]
    gain: float
    gain_se: float
    gain_ci: tuple[float, float]
    effective: EffectiveData
    predictors: dict[str, float | None]
    predictor_notes: dict[str, str]
    fits: dict[str, PowerLawFit]
    cells: list[dict[str, Any]]
    sweep: dict[str, Any]
    error_floor: float
    notes: list[str] = field(default_factory=list)

    def verdict(self) -> str:
        """A few lines of plain text for people."""
        L, N = self.n_blocks, self.target_size
        e_k, se_k = self.errors_at_n[f"k={self.k_star}"]
        e_s, se_s = self.errors_at_n["scratch"]
        head = {"transfer": "TRANSFER", "scratch": "TRAIN FROM SCRATCH", "either": "EITHER (no measurable difference)"}
        depth = ("fine-tune everything (k* = 0)" if self.k_star == 0 else
                 f"freeze the first k* = {self.k_star} of {L} blocks")
        lines = [f"verdict: {head[self.decision]} at N = {N} target examples; best transfer: {depth}; "
                 f"k within 2 SE of the best: {{{', '.join(map(str, self.k_star_set))}}}",
                 f"  expected test error at N: transfer {e_k:.3f} +- {se_k:.3f}, scratch {e_s:.3f} +- {se_s:.3f}; "
                 f"gain {self.gain:+.3f} (95% CI {self.gain_ci[0]:+.3f} to {self.gain_ci[1]:+.3f})"]
        eff = self.effective
        lo, hi = eff.measured_range
        ci = "; 95% CI " + " to ".join("unbounded" if v is None else f"{v:+.0f}" for v in eff.ci)
        if eff.status == "ok":
            lines.append(f"  the source is worth {eff.transferred:+.0f} target examples (transfer at N = {N} matches "
                         f"scratch at {eff.effective:.0f}{ci})")
        elif eff.status == "beyond_measured_range":
            lines.append(f"  the source is worth more than {eff.transferred:+.0f} target examples: scratch does not "
                         f"reach the transfer error within the measured sizes ({lo:.0f}..{hi:.0f}; beyond the "
                         "measured range)")
        else:
            lines.append(f"  the source is worth less than {eff.transferred:+.0f} target examples: the transfer error "
                         f"is above scratch's at the smallest measured size {lo:.0f} (below the measured range)")
        scores = ", ".join(f"{k} {v:.3g}" for k, v in self.predictors.items() if v is not None)
        if scores:
            lines.append(f"  predictors on frozen features (context, not used in the decision): {scores}")
        s = self.sweep
        lines.append(f"  sweep: {s['cells']} cells, sizes {min(s['sizes'])}..{max(s['scratch_sizes'])}, "
                     f"{s['seeds']} seeds, {s['max_steps']} steps per run (n / N times that above N), {s['seconds']:.0f} s "
                     + ("(steps given, no budget)" if s["budget_minutes"] is None else f"(budget {s['budget_minutes']:g} min)")
                     + f"; unconverged runs: {s['unconverged_runs']}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values (no NaN or infinity)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["effective"] = self.effective.to_dict()
        out["fits"] = {k: v.to_dict() for k, v in self.fits.items()}
        out["errors_at_n"] = {k: {"error": e, "se": se} for k, (e, se) in self.errors_at_n.items()}
        out["gain"] = {"estimate": self.gain, "se": self.gain_se, "ci95": list(self.gain_ci)}
        del out["gain_se"], out["gain_ci"]
        out["verdict"] = self.verdict()
        return out


ProgressFn = Callable[[str], None]


def advise(
    model: str,
    data: str,
    *,
    target_size: int | None = None,
    budget_minutes: float = 5.0,
    seed: int = 0,
    seeds: int = 2,
    n_sizes: int = 4,
    target_labels: str = "fine",
    architecture: str = "cnn",
    source_size: int = 10000,
    lr: float = 1e-3,
    test_size: int = 1000,
    steps: int | None = None,
    on_progress: ProgressFn | None = None,
) -> Advice:
    """Advise on transferring ``model`` to ``data`` at ``target_size`` training examples (module docstring).

    Args:
        model: ``pretrained:<name>``, ``trained:<data set>`` (with ``architecture``, ``source_size``) or
            ``module:<pkg.mod>:<function>`` (the function returns ``(module, blocks, head)``).
        data: a packaged data set (:func:`transferlab.tasks.load_dataset`; ``target_labels`` fine or coarse)
            or ``npz:<path>`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.
        target_size: N, the training examples the user has (default: min(1000, what the training split
            allows next to the validation split)).
        budget_minutes: wall-clock target for the predictors, the pilots and the sweep (not for training a
            ``trained:`` source the first time: it is cached); the step budget is fitted to it.
        seed: the seed of every subset and initialisation. seeds: runs per cell (>= 2, for error bars).
        n_sizes: target sizes of the transfer sweep (>= 3). lr: Adam's learning rate on the target.
        test_size: class-balanced test examples (the whole test split when it is smaller).
        steps: optimizer steps per training run at sizes up to N (n / N times that above N). Given, the
            timed pilots are skipped and ``budget_minutes`` is not used, so the advice is the same on every
            machine; by default the steps are fitted to the budget from the pilots' timing (machine
            dependent).
        on_progress: called with one line per finished cell.

    Raises:
        ConfigError: an unknown model or option, block names the module lacks.
        DataError: unreadable data, a single class, too little target data for the sweep.
    """
    from transferlab.experiments.transfer import _dataset, build_source

    budget = check_real(budget_minutes, "budget_minutes", low=0.0, low_open=True) * 60.0
    seed = check_int(seed, "seed", low=0)
    seeds = check_int(seeds, "seeds", low=2, note="standard errors need two runs per cell")
    n_sizes = check_int(n_sizes, "n_sizes", low=3, note="a power law with error bars needs three sizes")
    check_choice(target_labels, "target_labels", ("fine", "coarse"))
    check_int(test_size, "test_size", low=1)
    if steps is not None:
        steps = check_int(steps, "steps", low=MIN_STEPS, high=MAX_STEPS)
    say = on_progress or (lambda _line: None)

    base = _config(model, data, n=2, target_labels=target_labels, architecture=architecture,
                   source_size=source_size, lr=lr, test_size=test_size, seeds=seeds)
    dataset = _dataset(data, target_labels)
    n_classes, sizes, scratch_sizes, val_size = _plan(dataset, data, target_size, n_sizes)
    N = sizes[-1]
    source, _ = build_source(base, tuple(dataset.x_test.shape[1:]), seeds)
    started = time.monotonic()  # a trained source's one-time training (then cached) is not part of the budget
    L = source.n_blocks
    say(f"target {data}: {n_classes} classes, N = {N}; source {model}: {L} blocks")

    def cfg(n: int, protocol: str, k: int | None, steps: int, patience_steps: int | None = None) -> TransferConfig:
        return _config(model, data, n=n, protocol=protocol, k=k, target_labels=target_labels,
                       architecture=architecture, source_size=source_size, lr=lr, test_size=test_size,
                       seeds=seeds, val_size=val_size, max_steps=steps,
                       patience_steps=patience_steps or max(10, steps // 3))

    predictors, predictor_notes = _predictors(source, cfg(N, "freeze", L, MIN_STEPS), model, seed)
    say("predictors: " + ", ".join(f"{k} {v:.3g}" for k, v in predictors.items() if v is not None))

    plan = [(n, "freeze", k) for n in sizes for k in range(L + 1)] + [(n, "scratch", None) for n in scratch_sizes]
    # cells above N (scratch at 2N, 4N) get n / N times the steps: the same epochs as at N, so that the
    # scratch curve above N is not undertrained by a fixed step count
    weights = [max(1.0, n / N) for n, _, _ in plan]
    notes = []
    per_step = None
    if steps is None:
        # timed pilots (fine-tuning at N: the costliest step) without early stopping: a warm-up, then a short
        # and a long run; their difference is the cost of a step, the long run's remainder the fixed cost of a cell
        _, short, long = (_run_cell(source, cfg(N, "freeze", 0, s, patience_steps=s), seed)["seconds"]
                          for s in (PILOT_STEPS[0], *PILOT_STEPS))
        per_step = max(long - short, 1e-9) / (PILOT_STEPS[1] - PILOT_STEPS[0])
        per_cell = max(long - PILOT_STEPS[1] * per_step, 0.0)
        left = budget - (time.monotonic() - started)
        steps = int((left - len(plan) * per_cell) / (per_step * sum(weights)))
        if steps < MIN_STEPS:
            notes.append(f"the budget affords about {max(steps, 0)} steps per run; ran {MIN_STEPS} (the minimum), "
                         f"expected to take {(len(plan) * per_cell + sum(weights) * MIN_STEPS * per_step) / 60:.1f} min")
            steps = MIN_STEPS
        steps = min(steps, MAX_STEPS)
        say(f"pilot: {per_step * 1000:.1f} ms per step, {per_cell:.2f} s per cell; {len(plan)} cells x {steps} steps "
            f"x {seeds} seeds")
    else:
        say(f"{len(plan)} cells x {steps} steps x {seeds} seeds (steps given: no pilots, no budget)")

    cells = []
    for i, ((n, protocol, k), weight) in enumerate(zip(plan, weights, strict=True), start=1):
        row = _run_cell(source, cfg(n, protocol, k, round(steps * weight)), seed)
        cells.append(row)
        what = "scratch" if protocol == "scratch" else f"k={k}"
        result = (f"error {row['mean']:.3f} +- {row['se']:.3f}" if row["status"] == "ok" else row["status"])
        say(f"[{i}/{len(plan)}] n={n} {what}: {result} ({row['seconds']:.1f} s)")

    floor = 0.5 / cells[0]["n_test"]
    advice = _analyze(model, data, N, n_classes, source, cells, floor, seed)
    unconverged = sum(c["unconverged"] for c in cells)
    advice.predictors, advice.predictor_notes = predictors, predictor_notes
    advice.sweep = {"sizes": sizes, "scratch_sizes": scratch_sizes, "seeds": seeds, "max_steps": steps,
                    "validation_size": val_size, "test_size": cells[0]["n_test"], "cells": len(plan),
                    "pilot_seconds_per_step": per_step, "budget_minutes": None if per_step is None else budget / 60,
                    "seconds": time.monotonic() - started, "unconverged_runs": unconverged, "lr": lr}
    advice.notes = notes + advice.notes
    if unconverged:
        advice.notes.append(f"{unconverged} training runs did not converge within {steps} steps (their best "
                            "validation weights were used); a larger --budget gives them more steps")
    return advice


def _config(model: str, data: str, *, n: int, seeds: int, protocol: str = "freeze", k: int | None = 0,
            **fields: Any) -> TransferConfig:
    """The ``transfer`` experiment's cell config for one sweep cell (its source and target resolvers)."""
    from pydantic import ValidationError

    from transferlab.experiments.transfer import TransferConfig

    try:
        return TransferConfig(source=model, target=data, n=n, protocol=protocol, k=k, instances=seeds, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "model"
        raise ConfigError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _plan(dataset: Any, data: str, target_size: int | None, n_sizes: int) -> tuple[int, list[int], list[int], int]:
    """(C, transfer sizes, scratch sizes, validation size per seed) for the sweep; DataError when the
    training split is too small for it."""
    y = np.asarray(dataset.y_train)
    present = np.unique(y)
    if present.size < 2:
        raise DataError(f"target {data}: the training labels hold a single class ({present.tolist()}); "
                        "classification needs at least 2")
    C = int(dataset.n_classes)
    counts = np.bincount(y, minlength=C)
    fewest = int(counts.min())

    def val_for(n: int) -> int:
        return int(min(200, max(2 * C, n // 4)))

    def fits(n: int, val: int) -> bool:
        return fewest >= math.ceil(n / C) + math.ceil(val / C)

    if target_size is None:
        target_size = min(DEFAULT_TARGET_CAP, C * fewest - val_for(C * fewest))
    N = check_int(target_size, "target_size", low=1)
    if N < 4 * C:
        raise DataError(f"target size N = {N} is too small for the sweep: it fits error curves over sizes from 2 "
                        f"examples per class ({2 * C} for {C} classes) up to N, at least a factor 2, so N >= {4 * C}")
    val = val_for(N)
    if not fits(N, val):
        worst = int(np.argmin(counts))
        most = C * (fewest - math.ceil(val / C))
        raise DataError(f"target {data} has too little training data for the sweep: N = {N} training plus {val} "
                        f"validation examples need {math.ceil(N / C) + math.ceil(val / C)} per class, but class "
                        f"{worst} has {fewest}" + (f" (use --target-size <= {most})" if most >= 4 * C else ""))
    lo = max(2 * C, math.ceil(N / 8))
    sizes = sorted({int(round(s)) for s in np.geomspace(lo, N, n_sizes)})
    scratch = sizes + [m * N for m in (2, 4) if fits(m * N, val)]
    return C, sizes, scratch, val


def _run_cell(source: BlockNet, cfg: TransferConfig, seed: int) -> dict[str, Any]:
    """One sweep cell through the ``transfer`` experiment's own data and protocol code: its seeds' paired
    class-balanced subsets (:func:`~transferlab.experiments.transfer._target_data`) and :func:`protocol_row`."""
    from transferlab.experiments._source_cache import digest
    from transferlab.experiments.base import Cell
    from transferlab.experiments.transfer import _settings, _target_data, protocol_row
    from transferlab.report.plots import mean_se

    cell = Cell(key=digest(cfg.model_dump()), config=cfg, seed=seed)
    started = time.monotonic()
    data = _target_data(cell, cfg)
    out: dict[str, Any] = {"n": cfg.n, "protocol": cfg.protocol, "k": cfg.k if cfg.protocol == "freeze" else None,
                           "n_test": int(data.y_test.shape[0])}
    try:
        row = protocol_row(cfg, source, data, _settings(cfg, cfg.n), cell.torch_generator())
    except TrainingDiverged as err:
        out.update(status=f"diverged: {err}", errors=[], mean=None, se=None, unconverged=cfg.instances,
                   seconds=time.monotonic() - started)
        return out
    mean, se = mean_se(np.array(row["test_error_instances"]))
    out.update(status="ok", errors=row["test_error_instances"], mean=mean, se=se, unconverged=row["unconverged"],
               seconds=time.monotonic() - started)
    return out


def _predictors(source: BlockNet, cfg: TransferConfig, model: str, seed: int) -> tuple[dict[str, float | None], dict[str, str]]:
    """The cheap scores on the frozen features after block L of seed 0's N training examples."""
    import torch

    from transferlab import measures
    from transferlab.experiments._source_cache import digest
    from transferlab.experiments.base import Cell
    from transferlab.experiments.transfer import _target_data
    from transferlab.protocols.transfer import _features

    data = _target_data(Cell(key=digest(cfg.model_dump()), config=cfg, seed=seed), cfg)
    x, y = data.x_train[0], data.y_train[0].numpy()
    features = _features(source, x, source.n_blocks)[0].flatten(1).double().numpy()
    scores: dict[str, Callable[[], float]] = {
        "LogME": lambda: measures.logme_score(features, y),
        "H-score": lambda: measures.h_score(features, y, shrinkage="ledoit-wolf"),
        "NLEEP": lambda: measures.nleep_score(features, y),
        "GBC": lambda: measures.gbc_score(features, y),
        "TransRate": lambda: measures.transrate_score(features, y),
    }
    notes: dict[str, str] = {}
    if model.startswith("pretrained:"):
        notes["LEEP"] = notes["NCE"] = "the packaged pretrained networks ship without their source classifier"
    else:
        with torch.no_grad():
            logits = source.eval()(x)[0].double()
        probs = torch.softmax(logits, -1).numpy()
        scores["LEEP"] = lambda: measures.leep_score(probs, y)
        scores["NCE"] = lambda: measures.nce_score(probs, y)
    values: dict[str, float | None] = {}
    for name, score in scores.items():
        try:
            values[name] = float(score())
        except TransferlabError as err:
            values[name], notes[name] = None, str(err)
    for name in notes:
        values.setdefault(name, None)
    return values, notes


def _analyze(model: str, data: str, N: int, n_classes: int, source: BlockNet, cells: list[dict[str, Any]],
             floor: float, seed: int) -> Advice:
    """Fit every curve, then k*, the decision and the effective data at N."""
    fits: dict[str, PowerLawFit] = {}
    notes = []
    names = ["scratch", *(f"k={k}" for k in range(source.n_blocks + 1))]
    for name in names:
        runs = [(c["n"], e) for c in cells if c["status"] == "ok" and _curve(c) == name for e in c["errors"]]
        try:
            fits[name] = fit_power_law([r[0] for r in runs], [r[1] for r in runs], floor=floor)
        except DataError as err:
            notes.append(f"curve {name} left out: {err}")
    if "scratch" not in fits:
        raise TrainingDiverged("the scratch runs failed; no baseline to compare against: " + "; ".join(notes))
    at_n = {name: fit.error(N) for name, fit in fits.items()}
    transfer = {int(name[2:]): v for name, v in at_n.items() if name != "scratch"}
    best, within = k_star_set(transfer)
    (e_s, se_s), (e_k, se_k) = at_n["scratch"], at_n[f"k={best}"]
    gain, gain_se = e_s - e_k, math.hypot(se_s, se_k)
    decision, ci = transfer_decision(gain, gain_se, min(fits["scratch"].dof, fits[f"k={best}"].dof))
    log_e, log_se = fits[f"k={best}"].log_error(N)
    eff = effective_data(fits["scratch"], log_e, log_se, N, seed=seed)
    notes.append("the gain is the best of L + 1 noisy curves against scratch, so it is biased upward by "
                 "the selection; the error bars treat the paired curves as independent (conservative)")
    return Advice(model=model, data=data, target_size=N, n_classes=n_classes, n_blocks=source.n_blocks,
                  block_names=list(source.block_names), decision=decision, k_star=best, k_star_set=within,
                  errors_at_n=at_n, gain=gain, gain_se=gain_se, gain_ci=ci, effective=eff, predictors={},
                  predictor_notes={}, fits=fits, cells=cells, sweep={}, error_floor=floor, notes=notes)


def _curve(cell: dict[str, Any]) -> str:
    return "scratch" if cell["protocol"] == "scratch" else f"k={cell['k']}"


# --------------------------------------------------------------------------------------------------
# figures and the HTML page
# --------------------------------------------------------------------------------------------------


def advice_figures(advice: Advice) -> dict[str, tuple[Figure, str]]:
    """name -> (figure, caption): the error-vs-size curves with the effective-data inversion, and the
    error against k at N."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator, ScalarFormatter

    from transferlab.report.plots import legend_outside

    N = advice.target_size
    fig = Figure(figsize=(7.5, 4.4))
    ax = fig.add_subplot()
    for i, name in enumerate(["scratch", *(f"k={k}" for k in range(advice.n_blocks + 1))]):
        if name not in advice.fits:
            continue
        color = "k" if name == "scratch" else f"C{i - 1}"
        points = [c for c in advice.cells if c["status"] == "ok" and _curve(c) == name]
        ax.errorbar([c["n"] for c in points], [c["mean"] for c in points], yerr=[2 * c["se"] for c in points],
                    fmt="o", color=color, ms=4, capsize=2)
        fit = advice.fits[name]
        grid = np.geomspace(fit.n_min, fit.n_max, 50)
        ax.plot(grid, [fit.error(n)[0] for n in grid], "-" if name != "scratch" else "--", color=color,
                label=name.replace("=", " = "))
    eff = advice.effective
    e_t = advice.errors_at_n[f"k={advice.k_star}"][0]
    if eff.status == "ok":
        ax.annotate("", xy=(eff.effective, e_t), xytext=(N, e_t), arrowprops={"arrowstyle": "->", "color": "0.3"})
        ax.axvline(eff.effective, color="0.5", lw=0.8, ls=":")
    ax.axvline(N, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({c["n"] for c in advice.cells})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())  # under a decade of errors: label 0.3, 0.4, ...
    ax.set_xlabel("target training size n")
    ax.set_ylabel("target test error")
    legend_outside(ax, title="k = blocks frozen")
    fig.tight_layout()
    cap1 = (f"Test error against target size: points are means over {advice.sweep.get('seeds', '?')} seeds "
            "(bars +- 2 SE), lines the power-law fits log e = a - b log n; dashed black: training from scratch. "
            f"Vertical line: N = {N}. " + ("The arrow runs from the best transfer error at N to where the scratch "
                                          "curve reaches it: the effective data D_E." if eff.status == "ok" else
                                          "The scratch curve does not reach the best transfer error within the "
                                          "measured sizes (effective data beyond the measured range)."
                                          if eff.status == "beyond_measured_range" else ""))
    fig2 = Figure(figsize=(6.0, 4.0))
    ax2 = fig2.add_subplot()
    ks = list(range(advice.n_blocks + 1))
    known = [k for k in ks if f"k={k}" in advice.errors_at_n]
    est = [advice.errors_at_n[f"k={k}"] for k in known]
    ax2.errorbar(known, [e for e, _ in est], yerr=[2 * s for _, s in est], fmt="o-", capsize=3,
                 label="transfer (fit at N)")
    for k in advice.k_star_set:
        ax2.axvspan(k - 0.4, k + 0.4, color="C2", alpha=0.15, lw=0)
    e_s, se_s = advice.errors_at_n["scratch"]
    ax2.axhline(e_s, color="k", ls="--", label="scratch (fit at N)")
    ax2.axhspan(e_s - 2 * se_s, e_s + 2 * se_s, color="k", alpha=0.08, lw=0)
    ax2.set_xticks(ks)
    ax2.set_xlabel("k, blocks frozen (0: fine-tune everything)")
    ax2.set_ylabel(f"test error at N = {N}")
    ax2.legend(fontsize=8)
    fig2.tight_layout()
    cap2 = (f"Fitted test error at N = {N} against the number k of frozen source blocks, bars +- 2 SE; shaded "
            f"columns: the k within 2 SE of the best (k* = {advice.k_star}). Dashed line and band: scratch +- 2 SE.")
    return {"advise_error_vs_size": (fig, cap1), "advise_error_vs_k": (fig2, cap2)}


def write_advice_html(advice: Advice, path: str | Path) -> Path:
    """A self-contained HTML page (:func:`transferlab.report.html.write_report`): the verdict, the curves,
    the fits, the predictors and every cell. Returns the path."""
    from transferlab.report.html import ReportSection, write_report

    figures = advice_figures(advice)
    fits = [{"curve": name, **fit.to_dict(), "error at N": advice.errors_at_n[name][0],
             "SE at N": advice.errors_at_n[name][1]} for name, fit in advice.fits.items()]
    cells = [{"n": c["n"], "curve": _curve(c), "status": c["status"], "mean error": c["mean"], "se": c["se"],
              "errors per seed": ", ".join(f"{e:.4f}" for e in c["errors"]), "unconverged runs": c["unconverged"],
              "seconds": round(c["seconds"], 2)} for c in advice.cells]
    predictors = [{"predictor": k, "score": v, "note": advice.predictor_notes.get(k, "")}
                  for k, v in advice.predictors.items()]
    sections = [
        ReportSection(title="Verdict", text=advice.verdict()),
        ReportSection(title="Curves", figures={k: f for k, (f, _) in figures.items()},
                      captions={k: c for k, (_, c) in figures.items()}),
        ReportSection(title="Fits and cells", tables={"power-law fits": fits, "sweep cells": cells}),
        ReportSection(title="Predictors on the frozen features",
                      text="Scores of the source's features after its last block on N target examples; reported "
                           "for context, not used in the decision.", tables={"predictors": predictors}),
    ]
    summary = {"model": advice.model, "data": advice.data, "N": advice.target_size, "decision": advice.decision,
               "k*": advice.k_star, "k within 2 SE": str(advice.k_star_set),
               "gain over scratch": f"{advice.gain:+.4f} (95% CI {advice.gain_ci[0]:+.4f} .. {advice.gain_ci[1]:+.4f})",
               "effective data": f"{advice.effective.status}: D_T = {advice.effective.transferred:+.0f}"}
    return write_report(path, f"transferlab advise: {advice.model} -> {advice.data}", sections, summary=summary)
