"""The report reads like a paper's figure set: resolved zero contours, axes within the data, captions in
words, every marker explained, no legend over data, compact tables (issue 8, section 5)."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from transferlab.experiments import ResultTable, get_experiment
from transferlab.experiments.fate import FateConfig, cell_theory
from transferlab.report import ReportSection, render_html
from transferlab.report.html import MAX_INLINE_ROWS
from transferlab.report.plots import legend_outside, resolved_zero_contour
from transferlab.scaling import analyze_transfer, synthetic_losses
from transferlab.scaling.figures import transfer_captions, transfer_figures

FATE = get_experiment("fate")
THETAS_DEG = np.array([0.0, 22.5, 45.0, 67.5, 90.0])
GAMMAS = (0.2, 0.4, 0.6, 0.8, 1.25, 1.5, 2.0)


def _simulated_rows(unconverged: int = 0) -> list[dict[str, Any]]:
    """Rows as a simulated ``both`` sweep would store them: per instance, scratch = theory + noise and
    each transfer differs from scratch by the theory's T plus paired noise of 1e-4, as gradient
    descent's stopping rule leaves it (at gamma > 1, T_ft is 0 and only that noise remains). The first
    ``unconverged`` rows did not converge."""
    rng = np.random.default_rng(3)
    rows = []
    for theta in np.radians(THETAS_DEG):
        for gamma in GAMMAS:
            cfg = FateConfig(theta=float(theta), gamma=gamma, sigma=0.2, d=40, instances=10)
            row: dict[str, Any] = {**cfg.model_dump(mode="json"), "n": cfg.n, "replicate": 0, "key": "k",
                                   "converged": len(rows) >= unconverged, **cell_theory(cfg)}
            scratch = row["theory_risk_scratch"] + 0.05 * rng.standard_normal(cfg.instances)
            risks = {"scratch": scratch}
            for p in ("linear_transfer", "finetune"):
                risks[p] = scratch - row[f"theory_T_{p}"] + 1e-4 * rng.standard_normal(cfg.instances)
            for p, values in risks.items():
                row[f"risk_{p}"], row[f"risk_{p}_instances"] = float(values.mean()), values.tolist()
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def fate_results() -> Any:
    return FATE.analyze(ResultTable(_simulated_rows(unconverged=2)))


@pytest.fixture(scope="module")
def fate_figures(fate_results: Any) -> dict[str, Figure]:
    return FATE.figures(fate_results)


@pytest.fixture(scope="module")
def scaling() -> tuple[dict[str, Figure], dict[str, str]]:
    analysis = analyze_transfer(synthetic_losses(seed=0))
    return transfer_figures(analysis), transfer_captions(analysis)


def _drawn_paths(ax: Any) -> list[tuple[np.ndarray, str]]:
    """Data-coordinate vertices and line style of every line and contour drawn on ``ax`` (axis-spanning
    reference lines excluded)."""
    paths = []
    for line in ax.get_lines():
        if line.get_transform() == ax.transData:
            paths.append((np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float), line.get_linestyle()))
    for coll in ax.collections:
        if isinstance(coll, ContourSet):
            style = "--" if coll.get_linestyles()[0][0] else "-"
            paths += [(p.vertices, style) for p in coll.get_paths() if len(p.vertices)]
    return paths


def test_legend_outside_draws_no_empty_legend() -> None:
    """An axes with nothing labelled gets no legend (and matplotlib's 'no artists' warning is not raised);
    one labelled line gets a legend with exactly that entry."""
    import warnings

    ax = Figure().add_subplot()
    ax.plot([0, 1], [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert legend_outside(ax) is None
    assert ax.get_legend() is None
    ax.plot([0, 1], [1, 0], label="labelled")
    legend = legend_outside(ax)
    assert legend is not None and [text.get_text() for text in legend.get_texts()] == ["labelled"]


def test_resolved_contour_draws_nothing_through_noise_and_follows_a_resolved_boundary() -> None:
    from matplotlib.figure import Figure

    x, y = np.linspace(0, 1, 12), np.linspace(0, 90, 10)
    rng = np.random.default_rng(0)
    noise = 1e-4 * rng.standard_normal((10, 12))
    se = np.full((10, 12), 1e-5)  # the paired noise is resolved by its SE, but below the floor
    ax = Figure().add_subplot()
    assert resolved_zero_contour(ax, x, y, noise, se, floor=0.01) == 0
    assert ax.contour(x, y, noise, levels=[0.0]).get_paths()  # the plain contour zig-zags through it
    plane = (45.0 - y[:, None]) / 45.0 + 0 * x  # zero at y = 45
    ax = Figure().add_subplot()
    assert resolved_zero_contour(ax, x, y, plane + noise, np.full_like(plane, 0.02), floor=0.01) >= 1
    ((vertices, _),) = _drawn_paths(ax)
    assert np.allclose(vertices[:, 1], 45.0, atol=1.0)


def test_simulated_phase_diagram_has_no_contour_where_T_is_zero_within_noise(fate_figures: dict[str, Figure]) -> None:
    left = fate_figures["fate_phase_ft"].axes[0]
    solid = [v for v, style in _drawn_paths(left) if style in ("-", "solid")]
    assert solid, "the resolved part of the zero contour (theta near 60 deg, gamma < 1) is drawn"
    for vertices in solid:
        assert vertices[:, 0].max() < 1.0, "a solid simulation contour runs through gamma > 1 (T_ft = 0 there)"


def test_phase_axes_span_the_sampled_range_only(fate_figures: dict[str, Figure]) -> None:
    for name in ("fate_phase_lt", "fate_phase_ft"):
        left, right = fate_figures[name].axes[:2]
        for ax in (left, right):
            assert ax.get_xlim() == pytest.approx((min(GAMMAS), max(GAMMAS)))
            assert ax.get_ylim() == pytest.approx((0.0, 90.0))


def _legends(fig: Figure) -> list[Any]:
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]


def _marker_style(artist: Line2D) -> tuple[str, bool]:
    return str(artist.get_marker()), artist.get_markerfacecolor() == "none" or artist.get_fillstyle() == "none"


def _unexplained_markers(fig: Figure) -> list[str]:
    """Marker styles drawn on an axes that no legend shows (scatter plots must have a colour bar or a
    legend entry)."""
    legends = _legends(fig)
    texts = {t.get_text() for lg in legends for t in lg.get_texts()}
    shown = {_marker_style(h) for lg in legends for h in lg.legend_handles if isinstance(h, Line2D)}
    labelled = set()
    for ax in fig.axes:  # the artists behind the legend entries (an errorbar's entry shows its data line)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label in texts:
                labelled.add(id(handle))
                if isinstance(handle, ErrorbarContainer):
                    shown.add(_marker_style(handle[0]))
    problems = []
    for ax in fig.axes:
        caps = {id(cap) for c in ax.containers if isinstance(c, ErrorbarContainer) for cap in c[1]}
        for line in ax.get_lines():
            if id(line) in caps:
                continue
            if line.get_marker() not in ("None", "", None, " ") and len(line.get_xdata()):
                if _marker_style(line) not in shown:
                    problems.append(f"{ax.get_title()!r}: marker {_marker_style(line)}")
        for container in ax.containers:
            if isinstance(container, ErrorbarContainer) and _marker_style(container[0]) not in shown:
                problems.append(f"{ax.get_title()!r}: error bars {_marker_style(container[0])}")
        for coll in ax.collections:
            if isinstance(coll, PathCollection) and coll.colorbar is None and id(coll) not in labelled:
                problems.append(f"{ax.get_title()!r}: scatter without legend or colour bar")
    return problems


def _points_under_legends(fig: Figure) -> int:
    """How many plotted data vertices (lines, markers, scatter points) lie under a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [lg.get_window_extent(canvas.get_renderer()) for lg in _legends(fig)]
    covered = 0
    for ax in fig.axes:
        shown = [line.get_transform().transform(line.get_xydata()) for line in ax.get_lines()]
        shown += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
                  if isinstance(c, PathCollection)]
        for xy in shown:
            xy = xy[np.isfinite(xy).all(axis=1)]
            visible = xy[[ax.bbox.contains(px, py) for px, py in xy]] if len(xy) else xy
            covered += sum(int(b.contains(px, py)) for px, py in visible for b in boxes)
    return covered


def test_every_marker_is_explained_and_no_legend_covers_data(fate_figures: dict[str, Figure], scaling: Any) -> None:
    figures = {**fate_figures, **scaling[0]}
    assert {"fate_ridge", "scaling_transferred_data", "scaling_loss_curves"} <= set(figures)
    for name, fig in figures.items():
        assert _unexplained_markers(fig) == [], name
        assert _points_under_legends(fig) == 0, f"{name}: a legend covers data"


def test_every_figure_has_a_caption_in_words(fate_results: Any, fate_figures: dict[str, Figure], scaling: Any) -> None:
    captions = {**FATE.figure_captions(fate_results), **scaling[1]}
    assert set(captions) == set(fate_figures) | set(scaling[0])
    for name, caption in captions.items():
        words = re.findall(r"[A-Za-z]{2,}", caption)
        assert len(words) >= 25 and name not in caption, (name, caption)
    phase = captions["fate_phase_ft"]
    assert "resolved" in phase and "2 SE" in phase, "the caption says how the simulation contour is drawn"
    assert "excluded and left blank: 2 of 35" in phase
    for name in FATE.theory_only_figures:
        assert captions[name].startswith("Theory only"), name
    assert "hollow dots: points left out of it" in captions["scaling_transferred_data"]


def test_unconverged_cells_are_excluded_and_counted(fate_results: Any) -> None:
    assert fate_results.summary["simulated cells excluded (gradient descent did not converge)"] == "2 of 35"
    (setting,) = fate_results.data["settings"]
    assert np.isnan(setting["grids"]["T_ft"][0, :2]).all() and np.isfinite(setting["grids"]["T_ft"][0, 2:]).all()
    assert np.isfinite(setting["grids"]["T_ft_theory"][0, :2]).all(), "theory of an excluded cell is kept"
    (summary,) = fate_results.tables["settings"]
    assert summary["excluded (not converged)"] == 2
    cells = fate_results.tables["cells of both_sigma0.2_d40"]
    assert [c["excluded"] for c in cells[:3]] == [1, 1, 0] and "did not converge" in cells[0]["note"]
    for row in fate_results.tables["agreement with theory (|n/d - 1| >= 0.05)"]:
        assert row["cells"] == 33


def test_cells_tables_are_sorted_compact_and_collapsed(fate_results: Any) -> None:
    cells = fate_results.tables["cells of both_sigma0.2_d40"]
    keys = [(c["theta_deg"], c["gamma"]) for c in cells]
    assert keys == sorted(keys) and len(cells) == 35
    theory_rows = FATE.analyze(ResultTable([
        {**FateConfig(theta=t, gamma=g, mode="theory", d=50).model_dump(mode="json"), "n": round(g * 50),
         "converged": True, "replicate": 0, "key": "k",
         **cell_theory(FateConfig(theta=t, gamma=g, mode="theory", d=50))}
        for t in (0.2, 0.9) for g in (0.5, 1.5)
    ])).tables["cells of theory_sigma0.2_d50"]
    assert not any(k.startswith(("risk_scratch_se", "T_lt_se")) or k == "excluded" for r in theory_rows for k in r), \
        "theory cells carry no (blank) simulation columns"
    rows = [{"x": float(i), "zero": -0.0} for i in range(MAX_INLINE_ROWS + 5)]
    page = render_html("t", [ReportSection("s", tables={"long": rows, "short": rows[:3]})])
    assert page.count("<details") == 1 and f"show all {len(rows)} rows" in page
    csv = re.search(r'download="long.csv" href="data:text/csv;base64,([^"]+)"', page)
    assert csv and base64.b64decode(csv.group(1)).decode().splitlines()[:2] == ["x,zero", "0.0,-0.0"]
    assert ">-0<" not in page and page.count("<td>0</td>") >= 2 * 3


def test_figure_numbers_and_captions_in_html() -> None:
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    page = render_html("t", [ReportSection("s", figures={"a": fig, "b": fig}, captions={"a": "What a shows."})])
    assert "<strong>Figure 1.</strong> What a shows." in page
    assert "<strong>Figure 2.</strong> b" in page  # no caption: the name stands in


def test_theory_cells_report_converged() -> None:
    from transferlab.experiments import Cell

    row = FATE.run_batch([Cell("0" * 64, FateConfig(theta=math.pi / 4, gamma=0.5, d=30, mode="theory"))])[0]
    assert row["converged"] is True and not any(k.startswith(("unconverged_", "steps_")) for k in row)
