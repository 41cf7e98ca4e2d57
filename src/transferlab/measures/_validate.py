"""Input validation shared by every measure (the only place that turns user input into arrays).

Every public measure calls these helpers first, so bad input fails early with one
:class:`~transferlab.errors.DataError` that names the argument and the problem. The scalar
parameter checks (``check_int``, ``check_real``, ``check_bool``, ``check_choice``) are
:mod:`transferlab._checks`'s, re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transferlab._checks import check_bool, check_choice, check_int, check_real
from transferlab.errors import DataError

__all__ = [
    "as_matrix",
    "as_labels",
    "as_targets",
    "check_same_samples",
    "check_same_features",
    "check_int",
    "check_real",
    "check_bool",
    "check_choice",
]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert numpy arrays, torch tensors and nested sequences to a numpy array (no copy if possible)."""
    module = type(x).__module__
    if module.startswith("torch"):
        try:
            x = x.detach().cpu().numpy()
        except Exception as exc:  # pragma: no cover - exotic tensor types
            raise DataError(f"{name}: cannot convert torch tensor to numpy ({exc})") from exc
    try:
        return np.asarray(x)
    except Exception as exc:
        raise DataError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc


def as_matrix(
    x: Any,
    name: str,
    *,
    min_samples: int = 2,
    min_features: int = 1,
    cast: bool = True,
    allow_1d: bool = True,
) -> np.ndarray:
    """Validate ``x`` as an ``(n_samples, n_features)`` array of finite reals.

    A 1-D array of length n is read as ``(n, 1)`` when ``allow_1d``. With ``cast`` the result is a
    float64 array (a copy only when needed); otherwise a floating array keeps its dtype (float32
    stays float32, for blockwise float64 work on large inputs) and integers become float64.

    Raises :class:`DataError` naming ``name`` for: wrong dimensionality, too few samples or features,
    non-numeric dtype, NaN or infinite entries.
    """
    arr = _to_numpy(x, name)
    if arr.ndim == 1 and allow_1d:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (n_samples, n_features) array, got shape {arr.shape}")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "b":
            arr = arr.astype(np.float64)
        else:
            raise DataError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    n, d = arr.shape
    if n < min_samples:
        raise DataError(f"{name}: needs at least {min_samples} samples, got {n} (shape {arr.shape})")
    if d < min_features:
        raise DataError(f"{name}: needs at least {min_features} features, got {d} (shape {arr.shape})")
    if cast or arr.dtype.kind != "f":
        arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{name}: contains {bad} NaN or infinite entries")
    return arr


def check_same_samples(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("X", "Y")) -> None:
    """Raise :class:`DataError` unless ``x`` and ``y`` have the same number of rows (paired samples)."""
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{names[0]} and {names[1]} must have the same number of samples (rows); "
            f"got {names[0]} {x.shape} and {names[1]} {y.shape}"
        )


def check_same_features(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("X", "Y")) -> None:
    """Raise :class:`DataError` unless ``x`` and ``y`` live in the same feature space (same columns)."""
    if x.shape[1] != y.shape[1]:
        raise DataError(
            f"{names[0]} and {names[1]} must have the same number of features (columns); "
            f"got {names[0]} {x.shape} and {names[1]} {y.shape}"
        )


def as_labels(y: Any, n: int, name: str = "labels", *, min_classes: int = 1) -> tuple[np.ndarray, int]:
    """Validate class labels: a 1-D array of length ``n`` of hashable values.

    Returns ``(codes, n_classes)`` with integer codes ``0..n_classes-1`` (order of ``np.unique``).
    """
    arr = _to_numpy(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of class labels, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{name}: has {arr.shape[0]} entries but the features have {n} samples")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: contains NaN or infinite entries")
        if not np.all(arr == np.round(arr)):
            raise DataError(f"{name}: class labels must be integers (got non-integral floats)")
    _, codes = np.unique(arr, return_inverse=True)
    n_classes = int(codes.max()) + 1 if codes.size else 0
    if n_classes < min_classes:
        raise DataError(f"{name}: needs at least {min_classes} distinct classes, got {n_classes}")
    return codes.astype(np.intp), n_classes


def as_targets(y: Any, n: int, name: str = "targets") -> np.ndarray:
    """Validate regression targets: ``(n,)`` or ``(n, k)`` finite reals; returns float64 ``(n, k)``."""
    arr = as_matrix(y, name, min_samples=1)
    if arr.shape[0] != n:
        raise DataError(f"{name}: has {arr.shape[0]} rows but the features have {n} samples")
    return arr
