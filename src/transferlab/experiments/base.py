"""The interface every experiment kind implements.

An experiment kind is the only place that knows a paper. The sweep engine hands it *cells* -- one
validated config each, plus the randomness that belongs to that cell -- in batches of equal tensor
shape, and stores the rows it returns. After the sweep, :meth:`Experiment.analyze` turns the table of
stored rows into :class:`Results`, and :meth:`Experiment.figures` draws them.

Randomness: a cell's generators derive from ``(spec seed, cell key)`` only (:meth:`Cell.rng`,
:meth:`Cell.torch_generator`), so a result never depends on executor, batch size or order. A kind
must draw each cell's data from that cell's own generator, never from one shared by the batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from transferlab._optional import import_optional

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from matplotlib.figure import Figure

__all__ = ["Cell", "Experiment", "ExperimentConfig", "ResultTable", "Results"]


class ExperimentConfig(BaseModel):
    """Base of every kind's per-cell config: unknown keys are errors, values are immutable, and a
    number field takes a finite number only -- never NaN or infinity, a boolean (``instances =
    true`` is not 1) or a string (``mu = "nan"``, ``n = "40"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, (bool, str)) or info.field_name is None:
            return value
        if not _takes_number_only(cls.model_fields[info.field_name].annotation):
            return value
        if isinstance(value, bool):
            raise PydanticCustomError("number_not_bool", "expected a number, got the boolean {value}",
                                      {"value": str(value).lower()})
        try:
            number = float(value)
        except ValueError:
            return value  # not a number at all: the field's own type check names it
        if not math.isfinite(number):
            raise PydanticCustomError("non_finite", "non-finite value '{value}' is not allowed", {"value": value})
        raise PydanticCustomError("number_as_string", "expected a number, got the string '{value}' (drop the quotes)",
                                  {"value": value})


def _takes_number_only(annotation: Any) -> bool:
    """True for ``int``, ``float`` and their optional forms (``float | None``)."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    members = tuple(m for m in members if m is not type(None))
    return bool(members) and all(m in (int, float) for m in members)


@dataclass(frozen=True)
class Cell:
    """One point of a sweep.

    Attributes:
        key: stable hex digest of the canonical config JSON, the kind's name and version, and the
            replicate index. Equal keys mean equal work.
        config: the validated per-cell config (an instance of the kind's ``Config``).
        seed: the spec's seed.
        replicate: index of the repetition (``replicates = R`` in the spec gives 0..R-1).
    """

    key: str
    config: ExperimentConfig
    seed: int = 0
    replicate: int = 0

    def seed_sequence(self, family: int = 0, stream: int = 0) -> np.random.SeedSequence:
        """The root of this cell's randomness: entropy ``[seed, *words(key)]`` and spawn key
        ``(family, stream)``; family 0 feeds :meth:`rng`, family 1 :meth:`torch_generator`, so no
        numpy stream ever equals a torch stream."""
        words = [int(self.key[i : i + 8], 16) for i in range(0, len(self.key), 8)]
        return np.random.SeedSequence([self.seed, *words], spawn_key=(family, stream))

    def rng(self, stream: int = 0) -> np.random.Generator:
        """A numpy generator for this cell; different ``stream`` values are independent."""
        return np.random.default_rng(self.seed_sequence(0, stream))

    def torch_generator(self, stream: int = 0, device: str = "cpu") -> torch.Generator:
        """A seeded ``torch.Generator`` for this cell, independent of every :meth:`rng` stream."""
        import torch

        state = self.seed_sequence(1, stream).generate_state(1, dtype=np.uint64)[0]
        gen = torch.Generator(device=device)
        gen.manual_seed(int(state >> np.uint64(1)))
        return gen


@dataclass(frozen=True)
class ResultTable:
    """The stored rows of a sweep, as the kind's :meth:`Experiment.analyze` receives them.

    Attributes:
        rows: one dict per successful cell: its config fields, ``replicate``, ``key``, and the
            result fields that :meth:`Experiment.run_batch` returned.
        failed: one dict per failed cell: ``key``, ``config`` (dict) and ``error`` (text).
        params: the spec's fixed parameters (the ``[params]`` table), for reference.
    """

    rows: list[dict[str, Any]]
    failed: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """All values of ``name`` across rows, as an array (shape ``(n_rows,)``)."""
        try:
            return np.asarray([row[name] for row in self.rows])
        except KeyError:
            raise KeyError(f"no column {name!r}; columns are {sorted(self.columns())}") from None

    def columns(self) -> set[str]:
        return set().union(*(row.keys() for row in self.rows)) if self.rows else set()

    def group_by(self, *names: str) -> dict[tuple[Hashable, ...], list[dict[str, Any]]]:
        """Rows grouped by the values of ``names`` (insertion-ordered)."""
        groups: dict[tuple[Hashable, ...], list[dict[str, Any]]] = {}
        for row in self.rows:
            groups.setdefault(tuple(_hashable(row[n]) for n in names), []).append(row)
        return groups

    def to_pandas(self) -> pd.DataFrame:
        """The rows as a ``pandas.DataFrame`` of shape ``(n_rows, n_columns)``, one row per cell.

        Columns appear in the order the rows first name them; a field missing from a row is missing
        (NaN) there. Per-instance lists (e.g. ``risk_scratch_instances``) stay Python lists in an
        object column. ``failed`` and ``params`` travel in ``frame.attrs``, so
        :meth:`from_pandas` gives back an equal table. Needs pandas (``pip install pandas``).
        """
        pd = import_optional("pandas", "ResultTable.to_pandas", package="pandas", extra="pandas")
        columns = list(dict.fromkeys(name for row in self.rows for name in row))
        frame = pd.DataFrame.from_records(self.rows, columns=columns)
        frame.attrs.update(failed=[dict(f) for f in self.failed], params=dict(self.params))
        return frame

    @classmethod
    def from_pandas(
        cls,
        frame: pd.DataFrame,
        *,
        failed: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> ResultTable:
        """A table from a DataFrame of shape ``(n_rows, n_columns)``, one row per successful cell.

        Missing values (None, NaN, ``pd.NA``) are left out of their row: a stored row never holds
        NaN (a non-finite result marks its cell failed). numpy scalars and arrays become Python
        numbers and lists. ``failed`` and ``params`` default to ``frame.attrs`` (set by
        :meth:`to_pandas`).
        """
        pd = import_optional("pandas", "ResultTable.from_pandas", package="pandas", extra="pandas")
        rows = [
            {
                name: _native(value)
                for name, value in record.items()
                if not (pd.api.types.is_scalar(value) and pd.isna(value))
            }
            for record in frame.to_dict(orient="records")
        ]
        return cls(
            rows=rows,
            failed=list(frame.attrs.get("failed", [])) if failed is None else failed,
            params=dict(frame.attrs.get("params", {})) if params is None else params,
        )


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def _native(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists; anything else unchanged."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


@dataclass
class Results:
    """What :meth:`Experiment.analyze` returns.

    Attributes:
        tables: named tables (lists of flat dicts) shown in the report and exported.
        summary: named scalars or short strings, shown at the top of the report.
        data: anything else the kind's :meth:`Experiment.figures` needs (arrays, grids).
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class Experiment(ABC):
    """An experiment kind. Subclass, set the class attributes, implement :meth:`run_batch` and
    :meth:`analyze`, and register with :func:`transferlab.experiments.register`.

    Class attributes:
        name: the registered name used in specs (``experiment = "name"``).
        version: bump when results of the same config would change; part of every cell key.
        Config: the pydantic per-cell config (subclass of :class:`ExperimentConfig`); a spec's
            ``[params]`` plus one point of its ``[grid]`` must validate against it.
        description: one line for ``transferlab experiments``.
        theory_only_figures: names of figures drawn from closed forms alone, the same for every
            store; the report shows them apart, labelled theory-only.

    Convergence: a kind that trains records in each result row whether training converged -- a
    field ``converged``, a bool or a list of bools (one per instance) -- and where it stopped, in
    fields of the kind's choosing (``fate``: ``steps_<phase>``; ``transfer``: ``stop_epoch_instances``).
    ``transferlab status`` counts a cell as not converged when any of its flags
    is false; :meth:`analyze` must exclude or flag such cells and say how many.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    description: ClassVar[str] = ""
    theory_only_figures: ClassVar[frozenset[str]] = frozenset()

    def batch_key(self, config: ExperimentConfig) -> Hashable:
        """Cells whose keys are equal may be run in one :meth:`run_batch` call (equal tensor shapes).

        The default puts every cell in one group; the planner still splits groups into batches of
        at most the spec's ``batch_size`` cells.
        """
        return ()

    @abstractmethod
    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        """Compute every cell of a batch; return one flat JSON-able dict of results per cell, in order.

        Raise to fail the batch (the engine then retries its cells one by one to isolate the bad
        one). A non-finite number in a returned row marks that cell as failed.
        """

    @abstractmethod
    def analyze(self, table: ResultTable) -> Results:
        """Turn the table of successful rows into results (means, errors, fits, tables)."""

    def figures(self, results: Results) -> dict[str, Figure]:
        """Named matplotlib ``Figure`` objects (the ``Figure`` API, never pyplot state)."""
        return {}

    def figure_captions(self, results: Results) -> dict[str, str]:
        """A caption in words for each name of :meth:`figures`: what is plotted, the settings, how to
        read it (every marker and line style). The report shows the bare name where one is missing."""
        return {}

    @classmethod
    def parameters(cls) -> Iterable[tuple[str, str, Any]]:
        """``(name, type, default)`` for each config field, for ``transferlab experiments``."""
        for fname, finfo in cls.Config.model_fields.items():
            default = "(required)" if finfo.is_required() else repr(finfo.get_default(call_default_factory=True))
            annotation = finfo.annotation
            text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            yield fname, text.replace("typing.", ""), default
