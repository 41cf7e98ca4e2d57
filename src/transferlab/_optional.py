"""Optional third-party packages (pandas, pyarrow), imported on first use with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from transferlab.errors import ConfigError

__all__ = ["import_optional"]


def import_optional(module: str, purpose: str, *, package: str, extra: str) -> ModuleType:
    """Import ``module`` or raise a :class:`ConfigError` that says how to install it.

    Args:
        module: the dotted module name, e.g. ``"pandas"`` or ``"pyarrow.parquet"``.
        purpose: what needs it, for the message (``"ResultTable.to_pandas"``).
        package: the distribution to install (``"pandas"``).
        extra: the transferlab extra that pulls it in (``"pandas"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{purpose} needs {package}: pip install {package} (or pip install 'transferlab[{extra}]')"
        ) from None
