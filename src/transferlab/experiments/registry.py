"""Registry of experiment kinds: built-ins (imported lazily), decorated classes, and entry points.

Third-party kinds register with the :func:`register` decorator, or from an installed package through
the ``transferlab.experiments`` entry-point group (``name = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from transferlab.errors import ConfigError
from transferlab.experiments.base import Experiment

__all__ = ["register", "get_experiment", "available_experiments"]

# name -> "module:Class"; imported only when asked for, so listing kinds stays cheap.
_BUILTIN: dict[str, str] = {
    "toy": "transferlab.experiments.toy:ToyExperiment",
    "fate": "transferlab.experiments.fate:FateExperiment",
    "fate_relu": "transferlab.experiments.fate_relu:FateReluExperiment",
    "transfer": "transferlab.experiments.transfer:TransferExperiment",
    "defrost": "transferlab.experiments.defrost:DefrostExperiment",
    "granularity": "transferlab.experiments.granularity:GranularityExperiment",
    "transfer_scaling": "transferlab.experiments.transfer_scaling:TransferScalingExperiment",
    "transferability": "transferlab.experiments.transferability:TransferabilityExperiment",
}
_REGISTERED: dict[str, type[Experiment]] = {}


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: make ``cls`` available to specs as ``experiment = cls.name``."""
    for attr in ("name", "version", "Config"):
        if not hasattr(cls, attr):
            raise TypeError(f"experiment kind {cls.__qualname__} lacks class attribute {attr!r}")
    existing = _REGISTERED.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"experiment kind {cls.name!r} is already registered by {existing.__qualname__}")
    _REGISTERED[cls.name] = cls
    return cls


def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="transferlab.experiments")}


def _load(target: str) -> type[Experiment]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_experiments() -> list[str]:
    """Names of every kind a spec may name, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_point_targets()))


def get_experiment(name: str) -> Experiment:
    """An instance of the kind called ``name``; :class:`ConfigError` naming the known kinds if none."""
    if name in _REGISTERED:
        return _REGISTERED[name]()
    target = _BUILTIN.get(name) or _entry_point_targets().get(name)
    if target is None:
        known = ", ".join(available_experiments())
        raise ConfigError(f"unknown experiment {name!r}; known experiments: {known}")
    cls = _load(target)
    _REGISTERED.setdefault(name, cls)
    return cls()
