"""Reading a store back: the :class:`ResultTable` an experiment analyzes, and flat exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from transferlab._optional import import_optional
from transferlab.errors import ConfigError, StoreError
from transferlab.experiments import Experiment, ResultTable, get_experiment
from transferlab.sweep.store import Store, open_store

__all__ = ["load_table", "export_store", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("csv", "parquet", "json")


def load_table(store: Store | str | Path) -> tuple[Experiment, ResultTable]:
    """The store's experiment kind and its table of cells computed by the kind's current version.

    ``store`` is an open :class:`Store` or the path of a store file (opened, read and closed
    again; :class:`StoreError` if it is missing or not a store). Rows of ``ok`` cells are
    ``{**config, "replicate", "key", **result}``; failed cells are listed in ``table.failed`` with
    their error. ``load_table(path)[1].to_pandas()`` gives the rows as a DataFrame.
    """
    if not isinstance(store, Store):
        with open_store(store) as opened:
            return load_table(opened)
    name = store.experiment()
    if name is None:
        raise StoreError(f"{store.path}: the store holds no cells yet")
    kind = get_experiment(name)
    spec_json, _ = store.latest_spec()
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for cell in sorted(store.cells(), key=lambda c: c.key):  # a fixed order, whatever the run history
        if cell.version != kind.version:
            continue
        if cell.status == "ok" and cell.result is not None:
            rows.append({**cell.config, "replicate": cell.replicate, "key": cell.key, **cell.result})
        elif cell.status == "failed":
            failed.append({"key": cell.key, "config": cell.config, "error": cell.error})
    return kind, ResultTable(rows=rows, failed=failed, params=spec_json.get("params", {}))


_RESERVED = ("key", "status", "replicate", "error", "seconds", "host", "run_id")


def _flat_records(store: Store) -> list[dict[str, Any]]:
    """One flat dict per cell; a config or result field named like a reserved column is prefixed
    ``config.`` or ``result.`` instead of overwriting it."""
    records = []
    for cell in store.cells():
        record: dict[str, Any] = {"key": cell.key, "status": cell.status, "replicate": cell.replicate}
        for prefix, fields in (("config.", cell.config), ("result.", cell.result or {})):
            for name, value in fields.items():
                record[prefix + name if name in _RESERVED or name in record else name] = value
        record.update({"error": cell.error, "seconds": cell.seconds, "host": cell.host, "run_id": cell.run_id})
        records.append(record)
    return records


def export_store(store_path: str | Path, fmt: str, out: str | Path) -> Path:
    """Write every cell of the store as one flat table (config, result, status columns) to ``out``."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    with open_store(store_path) as store:
        records = _flat_records(store)
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the directory {out.parent} does not exist")
    columns: list[str] = []
    for record in records:
        columns.extend(c for c in record if c not in columns)
    if fmt == "json":
        out.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif fmt == "csv":
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: _as_json(r.get(c), (list, dict)) for c in columns} for r in records)
    else:
        pa = import_optional("pyarrow", "parquet export", package="pyarrow", extra="parquet")
        pq = import_optional("pyarrow.parquet", "parquet export", package="pyarrow", extra="parquet")
        # Per-instance arrays stay list columns (list<double>, nested for matrices); only dicts,
        # which have no fixed schema across cells, become JSON text.
        arrays = {}
        for c in columns:
            try:
                arrays[c] = pa.array([_as_json(r.get(c), (dict,)) for r in records])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ConfigError(f"parquet export: column {c!r} mixes types ({exc}); export as csv or json") from None
        pq.write_table(pa.table(arrays), out)
    return out


def _as_json(value: Any, kinds: tuple[type, ...]) -> Any:
    """``value`` as JSON text if it is one of ``kinds``, else unchanged (a flat table's cell)."""
    return json.dumps(value) if isinstance(value, kinds) else value
