"""The tidy table of losses every scaling fit starts from.

One row per training run: ``model_size`` (non-embedding parameters N), ``data_size`` (D: from-scratch
training data, or the fine-tuning data D_F), ``regime`` (``"scratch"`` or ``"finetune"``) and the
early-stopped ``loss``. All columns are 1-D arrays of the same length ``n_rows``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferlab._optional import import_optional
from transferlab.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["REGIMES", "REQUIRED_COLUMNS", "LossTable", "ScalingWarning"]

REGIMES = ("scratch", "finetune")
#: The columns of a tidy loss table (CSV header or DataFrame), in their canonical order.
REQUIRED_COLUMNS = ("model_size", "data_size", "regime", "loss")


class ScalingWarning(UserWarning):
    """A scaling fit went ahead but something deserves the user's attention (censored points,
    poorly fitting scratch curves, few points)."""


def warn(message: str) -> None:
    """Emit a :class:`ScalingWarning` attributed to the caller of the public function."""
    warnings.warn(message, ScalingWarning, stacklevel=3)


def _row(row_numbers: Sequence[int] | None, i: int) -> str:
    return f"row {row_numbers[i] if row_numbers is not None else i}"


@dataclass(frozen=True)
class LossTable:
    """Validated tidy losses; build with :meth:`from_columns`.

    Attributes:
        model_size: ``(n_rows,)`` float64, N > 0.
        data_size: ``(n_rows,)`` float64, D > 0.
        regime: ``(n_rows,)`` str, each ``"scratch"`` or ``"finetune"``.
        loss: ``(n_rows,)`` float64, finite and > 0.
    """

    model_size: NDArray[np.float64]
    data_size: NDArray[np.float64]
    regime: NDArray[np.str_]
    loss: NDArray[np.float64]

    @classmethod
    def from_columns(
        cls,
        model_size: ArrayLike,
        data_size: ArrayLike,
        regime: ArrayLike,
        loss: ArrayLike,
        *,
        row_numbers: Sequence[int] | None = None,
    ) -> LossTable:
        """Validate and build. Raises :class:`DataError` naming the first bad row (``row_numbers[i]``
        when given, e.g. CSV line numbers, else the 0-based index) and its model size. A row equal to
        an earlier one in all four columns is refused too: it is a copy (two runs never give the
        same loss to the last digit), and kept it would count twice and narrow the intervals."""
        columns = {
            "model_size": np.asarray(model_size, dtype=np.float64).ravel(),
            "data_size": np.asarray(data_size, dtype=np.float64).ravel(),
            "loss": np.asarray(loss, dtype=np.float64).ravel(),
        }
        reg = np.asarray(regime, dtype=np.str_).ravel()
        lengths = {name: col.size for name, col in columns.items()} | {"regime": reg.size}
        if len(set(lengths.values())) != 1:
            raise DataError(f"columns have different lengths: {lengths}")
        if reg.size == 0:
            raise DataError("the loss table is empty")
        n = columns["model_size"]
        for name in ("model_size", "data_size"):
            col = columns[name]
            bad = np.flatnonzero(~np.isfinite(col) | (col <= 0))
            if bad.size:
                i = bad[0]
                raise DataError(
                    f"column '{name}' must be finite and > 0: {_row(row_numbers, i)} has {float(col[i])!r}"
                    f" (model size {n[i]:g}); {bad.size} bad row(s) in all"
                )
        col = columns["loss"]
        bad = np.flatnonzero(~np.isfinite(col) | (col <= 0))
        if bad.size:
            i = bad[0]
            raise DataError(
                f"column 'loss' must be finite and > 0: {_row(row_numbers, i)} (model size {n[i]:g},"
                f" data size {columns['data_size'][i]:g}, regime {reg[i]}) has {float(col[i])!r};"
                f" {bad.size} bad row(s) in all"
            )
        bad = np.flatnonzero(~np.isin(reg, REGIMES))
        if bad.size:
            i = bad[0]
            raise DataError(
                f"column 'regime' must be 'scratch' or 'finetune': {_row(row_numbers, i)}"
                f" (model size {n[i]:g}) has {str(reg[i])!r}"
            )
        seen: set[tuple[float, float, str, float]] = set()
        copies = []
        for i, key in enumerate(zip(n.tolist(), columns["data_size"].tolist(), reg.tolist(), col.tolist())):
            if key in seen:
                copies.append(i)
            seen.add(key)
        if copies:
            i = copies[0]
            raise DataError(
                f"{_row(row_numbers, i)} is an exact copy of an earlier one (model size {n[i]:g}, data size "
                f"{columns['data_size'][i]:g}, regime {reg[i]}, loss {float(col[i])!r}); {len(copies)} copied "
                "row(s) in all. A repeated run has its own loss: remove the copies"
            )
        return cls(columns["model_size"], columns["data_size"], reg, columns["loss"])

    def __len__(self) -> int:
        return int(self.loss.size)

    def subset(self, regime: str) -> LossTable:
        """Rows of one regime (same column layout)."""
        mask = self.regime == regime
        return LossTable(self.model_size[mask], self.data_size[mask], self.regime[mask], self.loss[mask])

    def model_sizes(self, regime: str | None = None) -> NDArray[np.float64]:
        """Sorted distinct model sizes (of one regime if given)."""
        sizes = self.model_size if regime is None else self.model_size[self.regime == regime]
        return np.unique(sizes)

    def rows(self) -> list[dict[str, float | str]]:
        """The table as a list of flat dicts (for reports and CSV writing)."""
        return [
            {"model_size": float(n), "data_size": float(d), "regime": str(r), "loss": float(l)}
            for n, d, r, l in zip(self.model_size, self.data_size, self.regime, self.loss)
        ]

    def to_pandas(self) -> pd.DataFrame:
        """The table as a ``pandas.DataFrame`` of shape ``(n_rows, 4)`` with the columns
        :data:`REQUIRED_COLUMNS`. Needs pandas (``pip install pandas``)."""
        pd = import_optional("pandas", "LossTable.to_pandas", package="pandas", extra="pandas")
        return pd.DataFrame({name: getattr(self, name) for name in REQUIRED_COLUMNS})

    @classmethod
    def from_pandas(cls, frame: pd.DataFrame) -> LossTable:
        """Validate and build from a DataFrame with (at least) the columns :data:`REQUIRED_COLUMNS`.

        The same rules as the tidy CSV: extra columns are ignored, regimes are matched after
        stripping blanks and lower-casing. Raises :class:`DataError` naming missing columns, a
        non-numeric column, or the first bad row (0-based position) and its model size.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"DataFrame is missing column(s) {', '.join(repr(c) for c in missing)}; found "
                f"{', '.join(repr(str(c)) for c in frame.columns) or 'none'}; need {', '.join(REQUIRED_COLUMNS)}"
            )
        numeric = {}
        for name in ("model_size", "data_size", "loss"):
            try:
                numeric[name] = np.asarray(frame[name].to_numpy(), dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"column {name!r} must hold numbers; got dtype {frame[name].dtype}") from None
        regime = [str(r).strip().lower() for r in frame["regime"]]
        return cls.from_columns(numeric["model_size"], numeric["data_size"], regime, numeric["loss"])
