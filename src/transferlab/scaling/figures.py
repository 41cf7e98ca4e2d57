"""Figures of a transfer analysis (matplotlib ``Figure`` API only; no pyplot state).

* ``scaling_loss_curves``: loss vs D per model size -- scratch runs (dots), fitted scratch curves
  (lines), fine-tuned runs at their D_F (crosses);
* ``scaling_transferred_data``: D_T vs D_F per model size with the fitted law (lines); points left
  out of the fit drawn hollow;
* ``scaling_fraction_from_transfer``: D_T / (D_F + D_T) vs D_F per model size with the law (eq. B.2).
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from transferlab.scaling.law import fraction_from_transfer, transferred_data
from transferlab.scaling.pipeline import TransferAnalysis

__all__ = ["FIGURE_NAMES", "fraction_figure", "loss_curves_figure", "transfer_figures", "transferred_data_figure"]

FIGURE_NAMES = ("scaling_loss_curves", "scaling_transferred_data", "scaling_fraction_from_transfer")


def _colors(sizes: np.ndarray) -> dict[float, tuple[float, ...]]:
    cmap = colormaps["viridis"]
    pos = np.linspace(0.0, 0.9, sizes.size) if sizes.size > 1 else np.zeros(1)
    return {float(s): cmap(p) for s, p in zip(sizes, pos)}


def loss_curves_figure(analysis: TransferAnalysis) -> Figure:
    """Loss vs data size per model size (scratch dots + fitted curve, fine-tuned crosses)."""
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    table = analysis.table
    colors = _colors(table.model_sizes())
    for size, color in colors.items():
        sm = (table.model_size == size) & (table.regime == "scratch")
        fm = (table.model_size == size) & (table.regime == "finetune")
        ax.scatter(table.data_size[sm], table.loss[sm], s=10, color=color, label=f"N={size:.3g}")
        curve = analysis.effective.curves.get(size)
        if curve is not None:
            grid = np.geomspace(curve.d_min, curve.d_max, 200)
            ax.plot(grid, curve.loss(grid), color=color, lw=1)
        ax.scatter(table.data_size[fm], table.loss[fm], s=18, marker="x", color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("data size D (scratch) or D_F (fine-tuned, x)")
    ax.set_ylabel("early-stopped loss")
    ax.set_title("Scratch curves (dots, fit) and fine-tuned runs (x)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _law_panel(analysis: TransferAnalysis, quantity: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.6))
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
        ax.scatter(eff.data_size[ok], ys_ok, s=14, color=color, label=f"N={size:.3g}")
        ax.scatter(eff.data_size[out], ys_out, s=14, facecolors="none", edgecolors=color)
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
    ax.legend(fontsize=7, ncol=2)
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
