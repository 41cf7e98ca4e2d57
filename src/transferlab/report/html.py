"""The self-contained HTML report and figure files.

One HTML file holds everything: figures inlined as base64 PNG, tables, the spec and provenance. It
references no network address, so it opens offline and can be mailed as one attachment.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["MAX_INLINE_ROWS", "ReportSection", "render_html", "write_report", "save_figures", "figure_png_bytes",
           "table_csv"]

#: Tables longer than this are collapsed (a ``<details>`` element) with a CSV download beside them.
MAX_INLINE_ROWS = 30

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d232a;line-height:1.45;padding:0 1rem}
h1{font-size:1.7rem;border-bottom:2px solid #2b6cb0;padding-bottom:.3rem}
h2{font-size:1.3rem;margin-top:2.2rem;color:#2b6cb0}
h3{font-size:1.05rem;margin-bottom:.3rem}
div.tbl{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.85rem}
th,td{border:1px solid #cbd5e0;padding:.25rem .55rem;text-align:right}
th{background:#edf2f7}
td.t,th.t{text-align:left}
figure{margin:1rem 0 1.6rem}
figure img{max-width:100%;height:auto;border:1px solid #e2e8f0}
figcaption{font-size:.85rem;color:#4a5568;max-width:70em}
figcaption .name{color:#718096;font-family:monospace;font-size:.78rem}
details{margin:.3rem 0 1.2rem}
summary{cursor:pointer;color:#2b6cb0}
p.note{font-size:.85rem;color:#4a5568}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.7rem;overflow-x:auto;font-size:.82rem}
.summary td:first-child{text-align:left;font-weight:600}
.failed{color:#c53030}
"""


@dataclass
class ReportSection:
    """A titled block of the report.

    Attributes:
        title: the section heading.
        text: a paragraph of plain text (HTML-escaped when rendered).
        figures: name -> matplotlib Figure, shown in order, numbered across the report.
        tables: name -> rows (flat dicts; the union of keys gives the columns). A table longer than
            :data:`MAX_INLINE_ROWS` is collapsed, with its CSV as a download link (a data URL).
        captions: figure name -> caption in words; a figure without one is captioned by its name.
    """

    title: str
    text: str = ""
    figures: Mapping[str, Figure] = field(default_factory=dict)
    tables: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    captions: Mapping[str, str] = field(default_factory=dict)


def figure_png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig`` (rendered with the Agg canvas; no pyplot state is touched)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figures(
    figures: Mapping[str, Figure], directory: str | Path, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Write each figure as ``<directory>/<name>.<fmt>`` for every format; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        for fmt in formats:
            path = out / f"{_slug(name)}.{fmt}"
            fig.savefig(path, format=fmt, dpi=130, bbox_inches="tight")
            paths.append(path)
    return paths


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "figure"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:  # also -0.0, which would print as "-0"
            return "0"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.4g}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    return columns


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV text (the union of keys as the header; full precision; lists as JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _columns(rows)
    writer.writerow(columns)
    for row in rows:
        values = (row.get(c, "") for c in columns)
        writer.writerow(json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for v in values)
    return buffer.getvalue()


def _named_table_html(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """A table under its heading; longer than :data:`MAX_INLINE_ROWS`, collapsed beside a CSV download."""
    head = f"<h3>{html.escape(name)}</h3>"
    if len(rows) <= MAX_INLINE_ROWS:
        return head + _table_html(rows)
    data = base64.b64encode(table_csv(rows).encode("utf-8")).decode("ascii")
    link = f'<a download="{_slug(name)}.csv" href="data:text/csv;base64,{data}">download as CSV</a>'
    return (f"{head}<p class='note'>{len(rows)} rows ({link}).</p>"
            f"<details class='tl-table'><summary>show all {len(rows)} rows</summary>{_table_html(rows)}</details>")


def _table_html(rows: Sequence[Mapping[str, Any]], css_class: str = "") -> str:
    if not rows:
        return "<p><em>(empty)</em></p>"
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            klass = "" if isinstance(value, (int, float)) and not isinstance(value, bool) else ' class="t"'
            cells.append(f"<td{klass}>{html.escape(_format_value(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{css_class}"' if css_class else ""
    return f"<div class='tbl'><table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _figure_html(name: str, fig: Figure, caption: str | None, number: int) -> str:
    data = base64.b64encode(figure_png_bytes(fig)).decode("ascii")
    label = html.escape(name)
    text = html.escape(caption, quote=False) if caption else label
    return (
        f'<figure class="tl-figure" data-name="{label}">'
        f'<img alt="{html.escape(caption or name)}" src="data:image/png;base64,{data}">'
        f"<figcaption><strong>Figure {number}.</strong> {text} <span class='name'>[{label}]</span>"
        f"</figcaption></figure>"
    )


def render_html(
    title: str,
    sections: Sequence[ReportSection],
    *,
    summary: Mapping[str, Any] | None = None,
    spec_text: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole report as one HTML string (figures inline; no external resources)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        rows = [{"quantity": k, "value": v} for k, v in summary.items()]
        parts.append("<h2>Summary</h2>" + _table_html(rows, "summary"))
    number = 0
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for name, fig in section.figures.items():
            number += 1
            parts.append(_figure_html(name, fig, section.captions.get(name), number))
        for name, rows in section.tables.items():
            parts.append(_named_table_html(name, rows))
    if failures:
        parts.append(f"<h2 class='failed'>Failed cells ({len(failures)})</h2>")
        parts.append(_table_html(failures) if len(failures) <= MAX_INLINE_ROWS
                     else _named_table_html("failed cells", failures))
    if spec_text:
        parts.append(f"<h2>Spec</h2><pre>{html.escape(spec_text, quote=False)}</pre>")
    if provenance:
        rows = [{"item": k, "value": "" if v is None else v} for k, v in provenance.items()]
        parts.append("<h2>Provenance</h2>" + _table_html(rows, "summary"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: Sequence[ReportSection], **kwargs: Any) -> Path:
    """Render with :func:`render_html` and write to ``path`` atomically; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render_html(title, sections, **kwargs), encoding="utf-8")
    tmp.replace(target)
    return target
