"""The one exception family of transferlab.

Every error a user can cause derives from :class:`TransferlabError`; the CLI turns any of them into
one line on stderr and exit code 2. Library code raises; it never returns a silent NaN.
"""

from __future__ import annotations

__all__ = [
    "TransferlabError",
    "ConfigError",
    "DataError",
    "StoreError",
    "TrainingDiverged",
    "FitError",
]


class TransferlabError(Exception):
    """Base class of every error transferlab raises on purpose."""


class ConfigError(TransferlabError, ValueError):
    """A spec, parameter or argument is invalid (unknown key, wrong type, out of range)."""


class DataError(TransferlabError, ValueError):
    """Input arrays or files are unusable: wrong shape, non-finite values, degenerate data."""


class StoreError(TransferlabError):
    """A results store is unreadable, foreign, or belongs to another experiment."""


class TrainingDiverged(TransferlabError, ArithmeticError):
    """Training produced a non-finite or exploding loss."""


class FitError(TransferlabError):
    """A fit cannot be carried out (too few points, degenerate design)."""
