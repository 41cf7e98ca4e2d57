"""The on-disk cache of trained networks shared by the experiment kinds (``transfer``, ``defrost``).

A network that many cells need (a trained source, a target-scratch reference) is trained once, keyed by
the SHA-256 of the JSON of everything that determines it (:func:`digest`), and stored under
:func:`source_cache_dir` as ``<digest>.pt`` (a one-instance ``state_dict``, loaded weights-only) with
``<digest>.json`` (facts about it: accuracies, stopping epoch, ...). Files are written under a temporary
name and renamed into place, so a concurrent run sees no file or the whole file. A miss takes an exclusive
lock on ``<digest>.lock`` (``fcntl.flock``, released when the holder's file is closed, also when it dies)
and looks again before training, so two workers that miss at once train the network once: the second waits
and then loads the first one's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["digest", "load_or_train", "source_cache_dir"]

Trained = tuple[dict[str, "torch.Tensor"], dict[str, Any]]


def source_cache_dir() -> Path:
    """Where trained sources are cached: ``$TRANSFERLAB_CACHE/sources`` or ``~/.cache/transferlab/sources``."""
    root = os.environ.get("TRANSFERLAB_CACHE") or Path.home() / ".cache" / "transferlab"
    return Path(root) / "sources"


def digest(fields: dict[str, Any]) -> str:
    """SHA-256 hex digest of ``fields`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def load_or_train(key: str, train: Callable[[], Trained], *, memory: dict[str, Trained] | None = None,
                  keep: int = 1) -> Trained:
    """The ``(state_dict, facts)`` cached under ``key``: from ``memory``, from disk, or ``train()`` now.

    Args:
        key: the digest naming the network (:func:`digest` of its fields).
        train: called on a miss; returns the one-instance ``state_dict`` and JSON-able facts.
        memory: a per-process dict of networks already loaded (one source serves many cells of a batch).
        keep: how many networks ``memory`` holds at most (the oldest are dropped first).
    """
    import torch

    if memory is not None and key in memory:
        return memory[key]
    path = source_cache_dir() / f"{key}.pt"
    meta_path = path.with_suffix(".json")

    def stored() -> Trained | None:
        if path.exists() and meta_path.exists():
            return torch.load(path, weights_only=True, map_location="cpu"), json.loads(meta_path.read_text())
        return None

    loaded = stored()
    if loaded is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process training this network: wait for its files
            loaded = stored()
            if loaded is None:
                loaded = train()
                for target, write in ((path, lambda p: torch.save(loaded[0], p)),
                                      (meta_path, lambda p: p.write_text(json.dumps(loaded[1], indent=1)))):
                    tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
                    write(tmp)
                    os.replace(tmp, target)  # atomic: a reader without the lock sees no file or the whole file
    if memory is not None:
        while len(memory) >= max(1, keep):
            memory.pop(next(iter(memory)))
        memory[key] = loaded
    return loaded
