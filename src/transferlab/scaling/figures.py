"""Figures of a transfer analysis (matplotlib ``Figure`` API only; no pyplot state).

* ``scaling_loss_curves``: loss vs D per model size -- scratch runs (dots), fitted scratch curves
  (lines), fine-tuned runs at their D_F (crosses);
* ``scaling_transferred_data``: D_T vs D_F per model size with the fitted law (lines); points left
  out of the fit drawn hollow;
* ``scaling_fraction_from_transfer``: D_T / (D_F + D_T) vs D_F per model size with the law (eq. B.2).

Every legend sits outside its axes (it never covers data) and names every marker style: one entry
per model size (its colour) and one per marker meaning. :func:`transfer_captions` gives each figure
a caption in words for the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from transferlab.report.plots import legend_outside
from transferlab.scaling.law import fraction_from_transfer, transferred_data
from transferlab.scaling.pipeline import TransferAnalysis

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["FIGURE_NAMES", "fraction_figure", "loss_curves_figure", "transfer_captions", "transfer_figures",
           "transferred_data_figure"]

FIGURE_NAMES = ("scaling_loss_curves", "scaling_transferred_data", "scaling_fraction_from_transfer")


def _colors(sizes: np.ndarray) -> dict[float, tuple[float, ...]]:
    cmap = colormaps["viridis"]
    pos = np.linspace(0.0, 0.9, sizes.size) if sizes.size > 1 else np.zeros(1)
    return {float(s): cmap(p) for s, p in zip(sizes, pos)}


def _legend(ax: Axes, colors: dict[float, tuple[float, ...]], styles: list[tuple[str, dict[str, Any]]]) -> None:
    """Legend outside the axes: one colour entry per model size, then one entry per marker style."""
    handles = [Line2D([], [], color=c, lw=1, marker="o", ms=4, label=f"N={size:.3g}") for size, c in colors.items()]
    handles += [Line2D([], [], color="0.3", label=label, **style) for label, style in styles]
    legend_outside(ax, handles=handles, fontsize=7)


def loss_curves_figure(analysis: TransferAnalysis) -> Figure:
    """Loss vs data size per model size (scratch dots + fitted curve, fine-tuned crosses)."""
    fig = Figure(figsize=(7.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    table = analysis.table
    colors = _colors(table.model_sizes())
    for size, color in colors.items():
        sm = (table.model_size == size) & (table.regime == "scratch")
        fm = (table.model_size == size) & (table.regime == "finetune")
        ax.plot(table.data_size[sm], table.loss[sm], "o", ms=3, color=color)
        curve = analysis.effective.curves.get(size)
        if curve is not None:
            grid = np.geomspace(curve.d_min, curve.d_max, 200)
            ax.plot(grid, curve.loss(grid), color=color, lw=1)
        ax.plot(table.data_size[fm], table.loss[fm], "x", ms=4, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("data size D (scratch) or D_F (fine-tuned, x)")
    ax.set_ylabel("early-stopped loss")
    ax.set_title("Scratch curves (dots, fit) and fine-tuned runs (x)")
    _legend(ax, colors, [("scratch run", {"marker": "o", "ms": 3, "ls": ""}),
                         ("fitted scratch curve", {"lw": 1}),
                         ("fine-tuned run, at D_F", {"marker": "x", "ms": 4, "ls": ""})])
    return fig


def _law_panel(analysis: TransferAnalysis, quantity: str) -> Figure:
    fig = Figure(figsize=(7.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    eff, law = analysis.effective, analysis.fit.law
    colors = _colors(np.unique(eff.model_size))
    finite = np.isfinite(eff.transferred_data) & (eff.transferred_data > 0)
    for size, color in colors.items():
        m = eff.model_size == size
        ok = m & eff.usable
        out = m & ~eff.usable & finite
        if quantity == "dt":
            ys_ok, ys_out = eff.transferred_data[ok], eff.transferred_data[out]
        else:
            ys_ok = eff.transferred_data[ok] / eff.effective_data[ok]
            ys_out = eff.transferred_data[out] / eff.effective_data[out]
        ax.plot(eff.data_size[ok], ys_ok, "o", ms=4, color=color)
        ax.plot(eff.data_size[out], ys_out, "o", ms=4, mfc="none", color=color)
        if np.any(m):
            grid = np.geomspace(eff.data_size[m].min(), eff.data_size[m].max(), 100)
            curve = transferred_data(grid, size, law) if quantity == "dt" else fraction_from_transfer(grid, size, law)
            ax.plot(grid, curve, color=color, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning data size D_F")
    fit = analysis.fit
    label = f"k={fit.k:.3g}, alpha={fit.alpha:.3f}, beta={fit.beta:.3f}"
    if quantity == "dt":
        ax.set_yscale("log")
        ax.set_ylabel("effective data transferred D_T")
        ax.set_title(f"D_T = k D_F^alpha N^beta ({label})", fontsize=9)
    else:
        ax.set_ylabel("fraction from transfer D_T / (D_F + D_T)")
        ax.set_title(f"Fraction of effective data from transfer ({label})", fontsize=9)
    _legend(ax, colors, [("used in the fit", {"marker": "o", "ms": 4, "ls": ""}),
                         ("left out of the fit", {"marker": "o", "ms": 4, "ls": "", "mfc": "none"}),
                         ("fitted law", {"lw": 1})])
    return fig


def transferred_data_figure(analysis: TransferAnalysis) -> Figure:
    """D_T vs D_F per model size with the fitted law; hollow markers were left out of the fit."""
    return _law_panel(analysis, "dt")


def fraction_figure(analysis: TransferAnalysis) -> Figure:
    """Fraction of effective data from transfer vs D_F per model size with the fitted eq. B.2."""
    return _law_panel(analysis, "fraction")


def transfer_figures(analysis: TransferAnalysis) -> dict[str, Figure]:
    """All three figures keyed by :data:`FIGURE_NAMES`."""
    return dict(zip(FIGURE_NAMES, (loss_curves_figure(analysis), transferred_data_figure(analysis),
                                   fraction_figure(analysis))))


def transfer_captions(analysis: TransferAnalysis) -> dict[str, str]:
    """A caption in words for each of :data:`FIGURE_NAMES` (what is plotted, how to read it)."""
    fit, eff = analysis.fit, analysis.effective
    counts = eff.counts()
    left_out = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items() if v and k != "ok") or "none"
    law = (f"fitted by {fit.method} on the {counts['ok']} filled points of the low-data regime "
           f"(D_F <= {eff.low_data_fraction:g} D(N)): k = {fit.k:.3g}, alpha = {fit.alpha:.3f}, beta = {fit.beta:.3f}")
    hollow = (f"Filled dots: points used in the fit; hollow dots: points left out of it (by status: {left_out}; "
              "censored points are bounds, not values).")
    return {
        "scaling_loss_curves": (
            "Early-stopped loss against data size, one colour per model size N (log-log). Dots: models trained "
            "from scratch on D tokens; lines: the scratch curve L(D) fitted per model size; crosses: fine-tuned "
            "models at their fine-tuning data size D_F. A cross below its size's curve means the fine-tuned model "
            "reaches a loss that scratch training needs more data for: that extra data is the effective data "
            "transferred."),
        "scaling_transferred_data": (
            f"Effective data transferred D_T = D_E - D_F against fine-tuning data D_F, one colour per model size N "
            f"(log-log), with the law D_T = k D_F^alpha N^beta as lines, {law}. {hollow}"),
        "scaling_fraction_from_transfer": (
            f"Fraction of the effective data that comes from transfer, D_T / (D_F + D_T), against D_F, one colour "
            f"per model size N, with the fitted law's prediction (eq. B.2) as lines, {law}. {hollow}"),
    }
