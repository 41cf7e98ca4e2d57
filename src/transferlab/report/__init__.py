"""Figures and the self-contained HTML report.

:mod:`transferlab.report.plots` (shared plotting and statistics helpers) imports nothing above the
leaves, so experiment kinds may use it; :func:`write_store_report` (which reads a sweep store) is
imported on first use, so importing this package never loads the sweep engine.
"""

from typing import Any

from transferlab.report.html import (
    ReportSection,
    figure_png_bytes,
    render_html,
    save_figures,
    write_report,
)
from transferlab.provenance import collect_provenance, git_commit

__all__ = [
    "ReportSection",
    "collect_provenance",
    "figure_png_bytes",
    "git_commit",
    "render_html",
    "save_figures",
    "write_report",
    "write_store_report",
]


def __getattr__(name: str) -> Any:
    if name == "write_store_report":
        from transferlab.report.store_report import write_store_report

        return write_store_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
