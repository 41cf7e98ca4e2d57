"""Figures and the self-contained HTML report."""

from transferlab.report.html import (
    ReportSection,
    figure_png_bytes,
    render_html,
    save_figures,
    write_report,
)
from transferlab.provenance import collect_provenance, git_commit
from transferlab.report.store_report import write_store_report

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
