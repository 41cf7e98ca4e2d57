"""How well a transferability predictor ranks candidate sources: correlation with measured accuracy,
and how stable that verdict is across variations of the experimental setup.

Conventions (those of the model-selection literature: LogME, NLEEP, SFDA, Agostinelli et al. 2022):

- One *ranking problem* is a set of candidates (source models) evaluated on one setup (a target task,
  a target size, a protocol, a seed...): each candidate has a measured accuracy and one score per
  predictor. A predictor is good when its scores order the candidates as their accuracies do.
- The headline statistic is the weighted Kendall tau ``tau_w`` of :func:`scipy.stats.weightedtau`
  with its defaults (Vigna 2015): hyperbolic weight ``1 / (r + 1)`` for the element of rank ``r``
  (rank 0 = the largest value), additive pair weights ``w_i + w_j``, and ranks taken by decreasing
  lexicographic order of ``(score, accuracy)`` and of ``(accuracy, score)``, the two taus averaged.
  The result is symmetric in its arguments, in ``[-1, 1]``, and weights disagreements among the
  best candidates more than among the worst (choosing the best source is what matters).
- Pearson's correlation is reported beside it (linear agreement of the values).
- Stability (Agostinelli et al. 2022, "How stable are transferability metrics evaluations?"): over
  many variations of the setup, the distribution of each predictor's statistic (mean, SD,
  quantiles) and the fraction of variations in which each predictor is the best one.

Inputs are *rows*: mappings (e.g. :attr:`transferlab.experiments.base.ResultTable.rows`), one per
(setup, candidate), holding the setup fields, the candidate's name, its accuracy and each predictor's
score as columns.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from transferlab.errors import ConfigError, DataError
from transferlab.measures._validate import as_matrix, check_choice, check_same_samples

__all__ = [
    "weighted_kendall_tau",
    "pearson_correlation",
    "correlation_table",
    "stability_report",
    "StabilityReport",
]

Statistic = Literal["weighted_tau", "pearson"]

#: Two statistics closer than this count as a tie for first place (both are combinations of at most
#: a few thousand terms of size <= 1: roundoff stays below 1e-13).
WIN_TIE_TOL = 1e-12


def _pair(scores: Any, accuracies: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_matrix(scores, "scores")
    a = as_matrix(accuracies, "accuracies")
    if s.shape[1] != 1 or a.shape[1] != 1:
        raise DataError(f"scores and accuracies must be 1-D, one value per candidate; got {s.shape} and {a.shape}")
    check_same_samples(s, a, ("scores", "accuracies"))
    for name, v in (("scores", s), ("accuracies", a)):
        if np.all(v == v[0]):
            raise DataError(f"{name}: all {v.shape[0]} values are equal; a rank correlation is undefined")
    return s[:, 0], a[:, 0]


def weighted_kendall_tau(scores: Any, accuracies: Any) -> float:
    """Weighted Kendall tau between a predictor's ``scores (m,)`` and the measured ``accuracies (m,)``
    of ``m`` candidates: :func:`scipy.stats.weightedtau` with its defaults (see the module docstring).

    With ``sgn`` pair signs, ranks ``r`` from the lexicographic order of ``(x, y)`` and
    ``w(i, j) = 1/(r_i + 1) + 1/(r_j + 1)``:
    ``tau_w = sum_{i<j} w sgn(x_i - x_j) sgn(y_i - y_j) / sqrt(sum_{i<j, x_i != x_j} w * sum_{i<j, y_i != y_j} w)``,
    averaged over the two orders ``(scores, accuracies)`` and ``(accuracies, scores)``. 1 for the same
    order, -1 for the reverse.

    Raises:
        DataError: lengths differ, fewer than 2 candidates, or constant scores or accuracies.
    """
    s, a = _pair(scores, accuracies)
    return float(stats.weightedtau(s, a).statistic)


def pearson_correlation(scores: Any, accuracies: Any) -> float:
    """Pearson's ``r = cov(s, a) / (sd(s) sd(a))`` of ``scores (m,)`` and ``accuracies (m,)``, ``m >= 2``.

    Raises:
        DataError: lengths differ, fewer than 2 candidates, or constant scores or accuracies.
    """
    s, a = _pair(scores, accuracies)
    return float(np.clip(stats.pearsonr(s, a).statistic, -1.0, 1.0))


_STATISTICS = {"weighted_tau": weighted_kendall_tau, "pearson": pearson_correlation}


def _number(row: Mapping[str, Any], name: str, where: str) -> float:
    try:
        value = row[name]
    except KeyError:
        raise DataError(f"{where}: the row has no column {name!r}; it has {sorted(row)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise DataError(f"{where}: column {name!r} must be a finite number, got {value!r}")
    return float(value)


def _problems(
    rows: Iterable[Mapping[str, Any]], group: Sequence[str], candidate: str
) -> dict[tuple[Hashable, ...], list[Mapping[str, Any]]]:
    """Rows grouped by the values of ``group`` (insertion order); one candidate at most once per group."""
    problems: dict[tuple[Hashable, ...], list[Mapping[str, Any]]] = {}
    for i, row in enumerate(rows):
        try:
            key = tuple(tuple(row[g]) if isinstance(row[g], list) else row[g] for g in group)  # lists as in stored rows
            name = row[candidate]
        except KeyError as exc:
            raise DataError(f"row {i}: no column {exc.args[0]!r}; it has {sorted(row)}") from None
        members = problems.setdefault(key, [])
        if any(other[candidate] == name for other in members):
            setup = dict(zip(group, key, strict=True))
            raise DataError(
                f"setup {setup}: candidate {name!r} appears twice; add the field that distinguishes the two rows "
                f"(e.g. the seed or protocol) to group"
            )
        members.append(row)
    if not problems:
        raise DataError("rows: no rows given")
    return problems


def correlation_table(
    rows: Iterable[Mapping[str, Any]],
    predictors: Sequence[str],
    *,
    group: Sequence[str] = ("target",),
    candidate: str = "source",
    accuracy: str = "accuracy",
) -> list[dict[str, Any]]:
    """One row per (setup, predictor): the setup's ``group`` fields, ``predictor``, ``n_candidates``,
    ``weighted_tau`` and ``pearson`` between that predictor's scores and the accuracies of the
    setup's candidates. Setups appear in first-seen order, predictors in the given order.

    Args:
        rows: one mapping per (setup, candidate) with the ``group`` fields, ``candidate``,
            ``accuracy`` and one column per name in ``predictors`` (larger score = predicted better).
        group: the fields that identify one ranking problem (default: the target task).

    Raises:
        DataError: a missing column or non-finite value; a candidate twice in one setup; a setup with
            fewer than 2 candidates or constant accuracies or scores (the message names it).
    """
    table = []
    for key, members in _problems(rows, list(group), candidate).items():
        setup = dict(zip(group, key, strict=True))
        acc = [_number(r, accuracy, f"setup {setup}") for r in members]
        for p in predictors:
            scores = [_number(r, p, f"setup {setup}") for r in members]
            out: dict[str, Any] = {**setup, "predictor": p, "n_candidates": len(members)}
            for stat, fn in _STATISTICS.items():
                try:
                    out[stat] = fn(scores, acc)
                except DataError as exc:
                    raise DataError(f"setup {setup}, predictor {p!r}: {exc}") from None
            table.append(out)
    return table


@dataclass(frozen=True)
class StabilityReport:
    """Spread over setups of each predictor's rank correlation with accuracy, and who wins how often.

    Attributes:
        predictors: the ``P`` predictor names, in the given order.
        statistic: ``"weighted_tau"`` or ``"pearson"``.
        setups: the ``S`` setups, each a dict of its ``group`` fields, in first-seen order.
        values: ``(S, P)`` the statistic per setup and predictor.
        mean, sd: ``(P,)`` mean and sample standard deviation (``ddof = 1``) over setups.
        quantile_levels: ``(Q,)`` levels; ``quantiles``: ``(Q, P)`` (numpy's linear interpolation).
        win_fraction: ``(P,)`` fraction of setups each predictor wins; sums to 1 (see
            :func:`stability_report` for ties).
    """

    predictors: tuple[str, ...]
    statistic: str
    setups: tuple[dict[str, Any], ...]
    values: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    quantile_levels: np.ndarray
    quantiles: np.ndarray
    win_fraction: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One dict per predictor: ``predictor``, ``mean``, ``sd``, ``q<level>`` ... and ``win_fraction``."""
        out = []
        for j, p in enumerate(self.predictors):
            row: dict[str, Any] = {"predictor": p, "mean": float(self.mean[j]), "sd": float(self.sd[j])}
            row.update({f"q{level:g}": float(self.quantiles[i, j]) for i, level in enumerate(self.quantile_levels)})
            row["win_fraction"] = float(self.win_fraction[j])
            out.append(row)
        return out


def stability_report(
    rows: Iterable[Mapping[str, Any]],
    predictors: Sequence[str],
    *,
    group: Sequence[str] = ("target", "target_size", "protocol", "seed"),
    candidate: str = "source",
    accuracy: str = "accuracy",
    statistic: Statistic = "weighted_tau",
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
) -> StabilityReport:
    """The stability lesson of Agostinelli et al. (2022) on a table of scores and accuracies.

    Each distinct value of the ``group`` fields is one setup (one variation of target, target size,
    protocol, seed...); in each, ``statistic`` (:func:`weighted_kendall_tau` or
    :func:`pearson_correlation`) is computed per predictor over the setup's candidates, as in
    :func:`correlation_table`. Reported per predictor: mean, SD (``ddof = 1``) and quantiles of the
    statistic over the ``S`` setups, and the fraction of setups it wins.

    Winning and ties: in each setup the predictors whose statistic is within ``WIN_TIE_TOL`` (1e-12)
    of the best share the win equally (``k`` tied winners get ``1/k`` each), so the win fractions sum
    to 1 and a predictor that always ties with one other gets 0.5, not 1.

    Raises:
        ConfigError: no predictors, a repeated predictor, an unknown ``statistic``, quantile levels
            outside ``[0, 1]``.
        DataError: fewer than 2 setups, or anything :func:`correlation_table` refuses.
    """
    statistic = check_choice(statistic, "statistic", tuple(_STATISTICS))
    predictors = tuple(predictors)
    if not predictors or len(set(predictors)) != len(predictors):
        raise ConfigError(f"predictors must be distinct column names, at least one; got {list(predictors)}")
    levels = np.asarray(quantiles, dtype=float)
    if levels.ndim != 1 or not np.all((levels >= 0.0) & (levels <= 1.0)):
        raise ConfigError(f"quantiles must be levels in [0, 1], got {list(quantiles)}")
    table = correlation_table(rows, predictors, group=group, candidate=candidate, accuracy=accuracy)
    n_pred = len(predictors)
    setups = tuple({g: r[g] for g in group} for r in table[::n_pred])
    if len(setups) < 2:
        raise DataError(f"a stability report needs at least 2 setups (distinct values of {list(group)}); got {len(setups)}")
    values = np.array([r[statistic] for r in table]).reshape(len(setups), n_pred)
    best = values.max(axis=1, keepdims=True)
    winners = values >= best - WIN_TIE_TOL
    wins = (winners / winners.sum(axis=1, keepdims=True)).sum(axis=0)
    return StabilityReport(
        predictors=predictors,
        statistic=statistic,
        setups=setups,
        values=values,
        mean=values.mean(axis=0),
        sd=values.std(axis=0, ddof=1),
        quantile_levels=levels,
        quantiles=np.quantile(values, levels, axis=0),
        win_fraction=wins / len(setups),
    )
