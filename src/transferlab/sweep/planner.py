"""The planner: cells -> batches of equal tensor shape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from transferlab.experiments import Experiment
from transferlab.sweep.spec import PlannedCell

__all__ = ["iter_batches"]


def iter_batches(kind: Experiment, cells: Sequence[PlannedCell], batch_size: int) -> Iterator[list[PlannedCell]]:
    """Group cells by ``kind.batch_key`` (equal tensor shapes) and cut groups into batches of at
    most ``batch_size``, preserving grid order within each group."""
    groups: dict[Any, list[PlannedCell]] = {}
    for planned in cells:
        groups.setdefault(kind.batch_key(planned.cell.config), []).append(planned)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]
