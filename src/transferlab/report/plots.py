"""Plotting and statistics helpers shared by every experiment's figures (matplotlib ``Figure`` API only).

This module imports nothing from transferlab, so an experiment's ``figures`` may use it lazily without
pulling in the report's HTML machinery.

- :func:`mean_se`: the mean and standard error of a sample.
- :func:`diverging_norm`, :func:`draw_map`: a phase map, a diverging colour scale centred on 0 over a 2-D
  grid whose axes span exactly the sampled range (no padding beyond the data).
- :func:`zero_contour`: the zero contour of a smooth field (a closed form on a fine grid).
- :func:`resolved_zero_contour`: the zero contour of a *noisy* field (a simulation), drawn only where
  the sign change is resolved, so that noise around ``T = 0`` draws no zig-zags, loops or stray strokes.
- :func:`legend_outside`: a legend to the right of its axes, where it cannot cover data.

Grids are ``values[i, j]`` at ``(x[j], y[i])``: shape ``(y.size, x.size)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.collections import QuadMesh
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.legend import Legend

__all__ = ["diverging_norm", "draw_map", "legend_outside", "mean_se", "resolved_zero_contour", "zero_contour"]


def mean_se(values: np.ndarray) -> tuple[float, float | None]:
    """Mean and standard error ``std(ddof=1) / sqrt(n)`` of a 1-D sample of shape ``(n,)``; the
    standard error is None for a single value."""
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None
    return float(values.mean()), se


def diverging_norm(values: np.ndarray, cap: float = 1.0) -> TwoSlopeNorm:
    """A colour norm centred on 0 over the finite ``values`` (any shape); the positive side is capped at
    ``cap`` so that one large spike does not wash out the rest of the map."""
    from matplotlib.colors import TwoSlopeNorm

    finite = values[np.isfinite(values)]
    vmin = min(-1e-3, float(finite.min())) if finite.size else -1.0
    vmax = max(1e-3, min(cap, float(finite.max()))) if finite.size else 1.0
    return TwoSlopeNorm(vmin=vmin, vcenter=0.0, vmax=vmax)


def draw_map(ax: Axes, x: np.ndarray, y: np.ndarray, values: np.ndarray, norm: Any, cmap: str = "RdBu_r") -> QuadMesh:
    """Colour map of ``values`` (shape ``(y.size, x.size)``, NaN left blank), each cell centred on its grid
    point. The axes span exactly ``[min, max]`` of ``x`` and ``y`` (along an axis with one point the
    cell's width), never beyond the sampled range."""
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(values), cmap=cmap, norm=norm, shading="nearest",
                         rasterized=True)
    if x.size > 1:
        ax.set_xlim(float(x.min()), float(x.max()))
    if y.size > 1:
        ax.set_ylim(float(y.min()), float(y.max()))
    return mesh


def zero_contour(ax: Axes, x: np.ndarray, y: np.ndarray, values: np.ndarray, **style: Any) -> None:
    """The ``values = 0`` contour of a smooth field of shape ``(y.size, x.size)`` (NaN cells masked);
    nothing when the field does not change sign."""
    masked = np.ma.masked_invalid(values)
    if values.shape[0] > 1 and values.shape[1] > 1 and masked.count() and masked.min() < 0 < masked.max():
        ax.contour(x, y, masked, levels=[0.0], **style)


def resolved_zero_contour(ax: Axes, x: np.ndarray, y: np.ndarray, values: np.ndarray, se: np.ndarray, *,
                          floor: float, reach: float = 1.5, **style: Any) -> int:
    """The zero contour of a noisy field, drawn only where its sign change is resolved.

    A cell is *resolved positive* where ``values > max(2 se, floor)`` and *resolved negative* where
    ``values < -max(2 se, floor)`` (a NaN standard error resolves nothing). A point of the zero contour
    of ``values`` (it lies on the grid edge between two cells) is drawn only where both cells of its
    edge have ``|values| > floor`` and both a resolved positive and a resolved negative cell lie within
    ``reach`` grid steps of it (Chebyshev distance in grid indices). Where the field is zero within
    noise, nothing is drawn.

    Args:
        ax: the axes to draw on.
        x, y: grid coordinates, shapes ``(nx,)`` and ``(ny,)``, increasing.
        values, se: the field and its standard errors, shape ``(ny, nx)``; NaN marks a missing cell.
        floor: the smallest ``|value|`` that counts as non-zero, whatever the standard error.
        reach: how far (in grid steps) the resolved cells of both signs may lie from a drawn piece.
        style: passed to ``ax.plot``.

    Returns:
        The number of contour pieces drawn.
    """
    import contourpy

    if values.ndim != 2 or min(values.shape) < 2:
        return 0
    threshold = np.maximum(2.0 * np.where(np.isfinite(se), se, np.inf), floor)
    positive = np.argwhere(values > threshold)  # (k, 2) rows of (i, j)
    negative = np.argwhere(values < -threshold)
    if not positive.size or not negative.size:
        return 0
    masked = np.ma.masked_invalid(values)
    generator = contourpy.contour_generator(np.arange(values.shape[1], dtype=float),
                                            np.arange(values.shape[0], dtype=float), masked)
    drawn = 0
    for line in generator.lines(0.0):
        points = np.asarray(line)  # (m, 2) of (j, i) in grid-index coordinates
        keep = _within(points, positive, reach) & _within(points, negative, reach) & _edge_nonzero(points, values, floor)
        for run in _runs(keep):
            piece = points[run]
            ax.plot(np.interp(piece[:, 0], np.arange(x.size), x), np.interp(piece[:, 1], np.arange(y.size), y),
                    **style)
            drawn += 1
    return drawn


def _within(points: np.ndarray, cells: np.ndarray, reach: float) -> np.ndarray:
    """Whether each point (``(m, 2)`` as ``(j, i)``) lies within Chebyshev distance ``reach`` of a cell
    (``(k, 2)`` as ``(i, j)``); shape ``(m,)``."""
    distance = np.maximum(np.abs(points[:, None, 0] - cells[None, :, 1]), np.abs(points[:, None, 1] - cells[None, :, 0]))
    return (distance <= reach).any(axis=1)


def _edge_nonzero(points: np.ndarray, values: np.ndarray, floor: float) -> np.ndarray:
    """Whether both cells of the grid edge under each point (``(m, 2)`` as ``(j, i)``) have
    ``|values| > floor``; shape ``(m,)``. A contour point has one integer coordinate, so the two cells
    are its floor and ceiling along the other one."""
    snapped = np.where(np.abs(points - np.round(points)) < 1e-9, np.round(points), points)
    j_lo, i_lo = np.floor(snapped).astype(int).T
    j_hi, i_hi = np.ceil(snapped).astype(int).T
    with np.errstate(invalid="ignore"):
        big = np.abs(values) > floor
    return big[i_lo, j_lo] & big[i_hi, j_hi]


def _runs(keep: np.ndarray) -> list[slice]:
    """Slices of the runs of at least two consecutive True values in the 1-D mask ``keep``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [slice(start, stop) for start, stop in zip(edges[::2], edges[1::2]) if stop - start >= 2]


def legend_outside(ax: Axes, **kwargs: Any) -> Legend | None:
    """The axes' legend placed to the right of the axes (top-aligned), where it covers no data; None
    (no legend) when no artist of the axes has a label, e.g. a figure of a run where nothing converged."""
    kwargs.setdefault("fontsize", 8)
    if "handles" not in kwargs and not ax.get_legend_handles_labels()[0]:
        return None
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)
