"""Reading and writing the tidy loss CSV.

Format: a header line naming at least the columns ``model_size``, ``data_size``, ``regime`` and
``loss`` (any order; extra columns are ignored), then one run per line. ``regime`` is ``scratch``
or ``finetune``. Errors name the file, the line, the column and, where known, the model size.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from transferlab.errors import DataError
from transferlab.scaling.table import REQUIRED_COLUMNS, LossTable

__all__ = ["REQUIRED_COLUMNS", "read_losses_csv", "write_losses_csv"]


def _number(text: str, *, path: Path, line: int, column: str, model_size: str) -> float:
    try:
        return float(text)
    except ValueError:
        where = f" (model size {model_size})" if column != "model_size" else ""
        raise DataError(
            f"{path}: line {line}, column '{column}'{where}: {text!r} is not a number"
        ) from None


def read_losses_csv(path: str | Path) -> LossTable:
    """Read a tidy loss CSV into a validated :class:`LossTable`.

    Raises:
        DataError: unreadable file, missing columns (named, with the columns found), a malformed
            or non-positive value (line, column, model size), an unknown regime, NaN/inf losses,
            a row that copies an earlier one exactly, text that is not UTF-8.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # tolerate the BOM spreadsheets write
    except OSError as exc:
        raise DataError(f"cannot read loss table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "save the loss table as UTF-8 CSV") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; found "
                f"{', '.join(repr(h) for h in header) or 'no header'}; need {', '.join(REQUIRED_COLUMNS)}"
            )
        reader.fieldnames = header
        cols: dict[str, list[float]] = {"model_size": [], "data_size": [], "loss": []}
        regimes: list[str] = []
        lines: list[int] = []
        for record in reader:
            line = reader.line_num
            if all((v or "").strip() == "" for k, v in record.items() if k is not None):
                continue  # blank line
            values = {c: (record.get(c) or "").strip() for c in REQUIRED_COLUMNS}
            empty = [c for c, v in values.items() if v == ""]
            if empty:
                raise DataError(f"{path}: line {line}: empty value in column(s) {', '.join(empty)}")
            for c in cols:
                cols[c].append(_number(values[c], path=path, line=line, column=c, model_size=values["model_size"]))
            regimes.append(values["regime"].lower())
            lines.append(line)
    if not lines:
        raise DataError(f"{path}: no data rows")
    try:
        return LossTable.from_columns(cols["model_size"], cols["data_size"], regimes, cols["loss"],
                                      row_numbers=lines)
    except DataError as exc:
        raise DataError(f"{path}: {str(exc).replace('row ', 'line ', 1)}") from None


def write_losses_csv(table: LossTable, path: str | Path) -> Path:
    """Write ``table`` as a tidy CSV (``model_size,data_size,regime,loss``, full float precision)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUIRED_COLUMNS)
        for n, d, r, l in zip(table.model_size, table.data_size, table.regime, table.loss):
            writer.writerow([repr(float(n)), repr(float(d)), str(r), repr(float(l))])
    return path
