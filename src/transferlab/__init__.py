"""transferlab: the science of transfer learning in one library.

Subpackages (imported on first use, so ``import transferlab`` stays cheap):

- :mod:`transferlab.theory` -- closed forms (deep linear networks, phase boundaries)
- :mod:`transferlab.measures` -- similarity, intrinsic dimension, divergences, transferability scores
- :mod:`transferlab.scaling` -- transfer scaling laws, effective data, fits
- :mod:`transferlab.tasks`, :mod:`transferlab.nets`, :mod:`transferlab.train`, :mod:`transferlab.protocols`
- :mod:`transferlab.experiments`, :mod:`transferlab.sweep`, :mod:`transferlab.report`
- :mod:`transferlab.advise` -- should I transfer, and how deep? (predictors + a budgeted sweep -> a verdict)
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from transferlab.errors import (
    ConfigError,
    DataError,
    FitError,
    StoreError,
    TrainingDiverged,
    TransferlabError,
)

logging.getLogger("transferlab").addHandler(logging.NullHandler())

_SUBPACKAGES = frozenset(
    {
        "theory",
        "measures",
        "scaling",
        "tasks",
        "nets",
        "train",
        "protocols",
        "experiments",
        "sweep",
        "report",
        "advise",
    }
)

__all__ = [
    "__version__",
    "TransferlabError",
    "ConfigError",
    "DataError",
    "StoreError",
    "TrainingDiverged",
    "FitError",
    *sorted(_SUBPACKAGES),
]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # one source: pyproject.toml's version, read from the installed metadata
        from importlib.metadata import version

        return version("transferlab")
    if name in _SUBPACKAGES:
        return importlib.import_module(f"transferlab.{name}")
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    __version__: str
    from transferlab import (  # noqa: F401
        advise,
        experiments,
        measures,
        nets,
        protocols,
        report,
        scaling,
        sweep,
        tasks,
        theory,
        train,
    )
