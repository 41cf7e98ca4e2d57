"""The one validation helper for integer, real, flag and choice arguments.

A leaf module (standard library and :mod:`transferlab.errors` only), so ``tasks``, ``theory``,
``measures``, ``nets`` and the rest can all use it without import cost. Every helper returns the
value as a plain Python object (numpy scalars become ``int`` / ``float``) or raises
:class:`~transferlab.errors.ConfigError` with one message style, which states the whole requirement
whatever went wrong (wrong type or out of range)::

    n must be an integer >= 1, got 0
    k must be an integer in 0..3 (the number of blocks), got 5
    rcond must be a finite number in [0, 1) or None, got 1.5
    activation must be one of ('relu', 'tanh'), got 'swish'

Bools are never numbers here (``True`` is not a count), and strings are never numbers (``"3"`` is
refused, not parsed).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, overload

from transferlab.errors import ConfigError

__all__ = ["check_int", "check_real", "check_bool", "check_choice"]

_T = TypeVar("_T")


def _fmt(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _requirement(kind: str, low: float | None, high: float | None, interval: str, above: str, below: str) -> str:
    """What a bounded value must be: ``kind`` and ``interval`` (both bounds), ``above low`` or ``below high``."""
    if low is not None and high is not None:
        return f"{kind} {interval}"
    if low is not None:
        return f"{kind} {above} {_fmt(low)}"
    if high is not None:
        return f"{kind} {below} {_fmt(high)}"
    return kind


def _fail(name: str, requirement: str, value: Any, optional: bool, note: str) -> ConfigError:
    tail = (" or None" if optional else "") + (f" ({note})" if note else "")
    return ConfigError(f"{name} must be {requirement}{tail}, got {value!r}")


@overload
def check_int(
    value: Any, name: str, *, low: int | None = ..., high: int | None = ..., optional: Literal[False] = ...,
    note: str = ...,
) -> int: ...
@overload
def check_int(
    value: Any, name: str, *, low: int | None = ..., high: int | None = ..., optional: bool, note: str = ...,
) -> int | None: ...
def check_int(
    value: Any,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    optional: bool = False,
    note: str = "",
) -> int | None:
    """``value`` as an ``int`` in ``low..high`` (both inclusive; ``None``: unbounded).

    Accepts Python and numpy integers, never bools or floats. With ``optional``, ``None`` is
    returned as is. ``note`` is added in parentheses to the message (what the bound means).
    """
    if value is None and optional:
        return None
    requirement = _requirement("an integer", low, high, f"in {low}..{high}", ">=", "<=")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(name, requirement, value, optional, note)
    result = int(value)
    if (low is not None and result < low) or (high is not None and result > high):
        raise _fail(name, requirement, result, optional, note)
    return result


@overload
def check_real(
    value: Any, name: str, *, low: float | None = ..., high: float | None = ..., low_open: bool = ...,
    high_open: bool = ..., finite: bool = ..., optional: Literal[False] = ..., note: str = ...,
) -> float: ...
@overload
def check_real(
    value: Any, name: str, *, low: float | None = ..., high: float | None = ..., low_open: bool = ...,
    high_open: bool = ..., finite: bool = ..., optional: bool, note: str = ...,
) -> float | None: ...
def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    optional: bool = False,
    note: str = "",
) -> float | None:
    """``value`` as a ``float`` between ``low`` and ``high`` (``None``: unbounded).

    The bounds are inclusive unless ``low_open`` / ``high_open``. NaN is always refused, and
    infinities too when ``finite``. Accepts Python and numpy reals (integers included), never bools
    or strings. With ``optional``, ``None`` is returned as is.
    """
    if value is None and optional:
        return None
    interval = f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    requirement = _requirement(
        "a finite number" if finite else "a number", low, high, interval, ">" if low_open else ">=",
        "<" if high_open else "<=",
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, requirement, value, optional, note)
    result = float(value)
    bad = (
        math.isnan(result)
        or (finite and math.isinf(result))
        or (low is not None and (result <= low if low_open else result < low))
        or (high is not None and (result >= high if high_open else result > high))
    )
    if bad:
        raise _fail(name, requirement, result, optional, note)
    return result


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a ``bool``: a real flag (Python or numpy bool), not a truthy number or string."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise _fail(name, "True or False", value, False, "")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[_T]) -> _T:
    """``value`` if it is one of ``choices`` (same type and equal), else a message listing them."""
    for choice in choices:
        if isinstance(value, type(choice)) and value == choice:
            return value
    raise _fail(name, f"one of ({', '.join(map(repr, choices))})", value, False, "")
