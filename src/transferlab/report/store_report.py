"""The report of a sweep store: the experiment's figures and tables, the spec, provenance, failures."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from transferlab.report.html import ReportSection, save_figures, write_report
from transferlab.provenance import collect_provenance
from transferlab.sweep import load_table, open_store

__all__ = ["write_store_report"]


def write_store_report(store_path: str | Path, html_path: str | Path, figures_dir: str | Path | None = None,
                       title: str | None = None) -> Path:
    """Analyze the store with its experiment kind and write ``html_path`` (self-contained) plus every
    figure as PNG and SVG in ``figures_dir`` (default: ``<html dir>/figures``).

    Figures carry the kind's captions (:meth:`~transferlab.experiments.Experiment.figure_captions`);
    the kind's theory-only figures, which do not depend on the store, are shown in a section of
    their own."""
    html_path = Path(html_path)
    with open_store(store_path) as store:
        kind, table = load_table(store)
        _, spec_text = store.latest_spec()
        runs = store.runs()
        counts = store.counts()
        compute_s = store.total_seconds()
    sections: list[ReportSection] = []
    summary: dict[str, Any] = {"experiment": f"{kind.name} (version {kind.version})", "cells ok": len(table.rows),
                               "cells failed": len(table.failed)}
    if counts["running"]:
        summary["cells running or interrupted"] = counts["running"]
    older = counts["ok"] + counts["failed"] - len(table.rows) - len(table.failed)
    if older:
        summary["cells of older kind versions (not analyzed)"] = older
    if len(runs) > 1:
        summary["runs"] = f"{len(runs)} (the analysis uses every cell of the store; the spec shown is the latest)"
    if table.rows:
        results = kind.analyze(table)
        figures = kind.figures(results)
        captions = kind.figure_captions(results)
        save_figures(figures, figures_dir if figures_dir is not None else html_path.parent / "figures")
        summary.update(results.summary)
        data_figures = {k: f for k, f in figures.items() if k not in kind.theory_only_figures}
        theory_figures = {k: f for k, f in figures.items() if k in kind.theory_only_figures}
        sections.append(ReportSection("Results", figures=data_figures, tables=results.tables, captions=captions))
        if theory_figures:
            sections.append(ReportSection(
                "Theory-only figures",
                text=(f"These figures are drawn from the {kind.name} kind's closed forms alone: they are the same for "
                      "every store and do not depend on this store's cells."),
                figures=theory_figures, captions=captions))
    else:
        sections.append(ReportSection("Results", text="No cell finished successfully; nothing to analyze."))
    provenance = collect_provenance()
    provenance["store"] = str(Path(store_path).resolve())
    provenance["compute seconds (sum over cells)"] = f"{compute_s:.2f}"
    run_rows = [
        {"run": r["run_id"], "started (UTC)": _utc(r["started"]), "wall s": _duration(r), "status": r["state"],
         "executor": r["executor"], "host": r["host"], "version": r["package_version"],
         "commit": (r["git_commit"] or "")[:12], "ok": r["cells_ok"], "failed": r["cells_failed"]}
        for r in runs
    ]
    sections.append(ReportSection("Runs", tables={"runs of this store": run_rows}))
    failures = [{"key": f["key"][:12], "config": f["config"], "error": f["error"]} for f in table.failed]
    return write_report(html_path, title or f"transferlab report: {kind.name}", sections, summary=summary,
                        spec_text=spec_text, provenance=provenance, failures=failures)


def _utc(stamp: float | None) -> str:
    return "" if stamp is None else _dt.datetime.fromtimestamp(stamp, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: dict[str, Any]) -> float | str:
    return round(run["finished"] - run["started"], 2) if run["finished"] else ""
