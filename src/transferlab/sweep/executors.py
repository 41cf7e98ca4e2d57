"""Executors: where ``run_batch`` runs. Each returns ``concurrent.futures.Future`` objects whose
result is a :class:`BatchResult`, so the driver treats them alike.

- ``serial``: in the driver's process, one batch at a time.
- ``process``: a local pool of spawned worker processes; each worker is single-threaded in torch,
  OpenMP and BLAS unless ``threads_per_worker`` says otherwise (on few cores, one single-threaded
  worker per core is fastest for small models).
- ``ray``: Ray tasks, on a local instance started for the run or on the cluster at ``address``.
  Results come back to the driver, which stays the only writer of the store. Worker thread limits
  are set through Ray's runtime environment only when this executor starts Ray; with Ray already
  initialised by the caller, the caller's settings apply. A local instance this executor starts
  never outlives the driver: on Linux a small reaper process (:mod:`transferlab.sweep._ray_reaper`)
  kills whatever of it is left when the driver closes the executor or dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.errors import ConfigError
from transferlab.experiments import Cell, get_experiment

__all__ = ["BatchResult", "Executor", "available_cpus", "check_executor", "make_executor", "execute_batch", "EXECUTORS"]

log = logging.getLogger("transferlab.sweep")

EXECUTORS = ("serial", "process", "ray")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def thread_environment(threads: int) -> Iterator[None]:
    """Set the BLAS/OpenMP thread variables (``_THREAD_VARS``) to ``threads`` inside the block and restore
    them afterwards (a process started inside inherits the limit; libraries already loaded keep theirs)."""
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update({var: str(threads) for var in _THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@dataclass(frozen=True)
class BatchResult:
    """A batch's outcome: ``rows`` (one per cell) or ``error``/``traceback`` if ``run_batch`` raised."""

    rows: list[dict[str, Any]] | None
    error: str | None
    traceback: str | None
    started: float
    finished: float
    host: str


def execute_batch(experiment: str, cells: Sequence[Cell]) -> BatchResult:
    """Run one batch of ``experiment`` (looked up by name in the worker) and capture any exception."""
    kind = get_experiment(experiment)
    started = time.time()
    try:
        rows = list(kind.run_batch(list(cells)))
    except Exception as exc:  # any failure of user/kind code becomes a failed batch, never a crash
        return BatchResult(None, f"{type(exc).__name__}: {exc}", traceback.format_exc(), started,
                           time.time(), socket.gethostname())
    return BatchResult(rows, None, None, started, time.time(), socket.gethostname())


def _init_worker(threads: int, experiment: str | None) -> None:
    """Process-pool worker start-up: exit if the driver dies (even by SIGKILL), so no worker outlives
    its sweep; keep BLAS/OpenMP/torch at ``threads`` (torch reads ``OMP_NUM_THREADS`` when it is
    first imported, so it is not imported here); import the experiment kind ahead of the first batch.
    """
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch() -> None:
            parent.join()
            os._exit(1)

        threading.Thread(target=watch, name="transferlab-parent-watch", daemon=True).start()
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    if experiment is not None:
        get_experiment(experiment)


def available_cpus() -> int:
    """CPUs this process may run on (affinity and cgroup-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class Executor:
    """Submit batches, get futures; :meth:`close` releases workers."""

    name = "serial"

    def __init__(self, jobs: int = 1):
        self.jobs = jobs

    def submit(self, experiment: str, cells: Sequence[Cell]) -> Future[BatchResult]:
        future: Future[BatchResult] = Future()
        future.set_result(execute_batch(experiment, cells))
        return future

    def close(self) -> None:
        """Nothing to release for the serial executor."""


class ProcessExecutor(Executor):
    name = "process"

    def __init__(self, jobs: int, threads_per_worker: int = 1, experiment: str | None = None):
        super().__init__(jobs)
        import multiprocessing

        # inherited by spawned workers before they import numpy/torch
        with thread_environment(threads_per_worker):
            self._pool = ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(threads_per_worker, experiment),
            )
            # start every worker now, while the environment carries the thread limits
            for future in [self._pool.submit(os.getpid) for _ in range(jobs)]:
                future.result()

    def submit(self, experiment: str, cells: Sequence[Cell]) -> Future[BatchResult]:
        return self._pool.submit(execute_batch, experiment, list(cells))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, jobs: int, address: str | None = None, threads_per_worker: int = 1,
                 jobs_given: int | None = None):
        super().__init__(jobs)
        import ray

        self._ray = ray
        self._started_here = not ray.is_initialized()
        self._reaper: subprocess.Popen[bytes] | None = None
        if self._started_here:
            env = {var: str(threads_per_worker) for var in _THREAD_VARS}
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs.update(num_cpus=jobs, include_dashboard=False)
                self._reaper = _start_reaper()
            try:
                ray.init(**kwargs)
            except BaseException:
                self._stop_reaper()
                raise
            if self._reaper is not None:
                try:  # tell the reaper that Ray's own processes are all started
                    self._reaper.stdin.write(b"ready\n")  # type: ignore[union-attr]
                    self._reaper.stdin.flush()  # type: ignore[union-attr]
                except BrokenPipeError:
                    log.warning("the Ray reaper died; a killed run may leave Ray processes behind")
        if address and jobs_given is None:  # size the dispatch window to the cluster
            self.jobs = max(1, int(ray.cluster_resources().get("CPU", jobs)))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute_batch)

    def submit(self, experiment: str, cells: Sequence[Cell]) -> Future[BatchResult]:
        return self._remote.remote(experiment, list(cells)).future()

    def close(self) -> None:
        """Shut down the Ray instance if this executor started it (and reap what it leaves)."""
        if self._started_here:
            self._ray.shutdown()
        self._stop_reaper()

    def _stop_reaper(self) -> None:
        """Close the reaper's stdin (it then kills what is left of the local instance) and wait."""
        if self._reaper is not None:
            try:
                self._reaper.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:  # it died already; nothing to wait for
                pass
            self._reaper.wait(timeout=60)
            self._reaper = None


def _start_reaper() -> subprocess.Popen[bytes] | None:
    """Start the reaper of a local Ray instance (Linux only: it reads ``/proc``) and wait until it
    has noted the processes that are not Ray's; None where it cannot run."""
    if not sys.platform.startswith("linux"):
        return None
    script = Path(__file__).with_name("_ray_reaper.py")
    reaper = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready = reaper.stdout.read(1)  # type: ignore[union-attr]
    reaper.stdout.close()  # type: ignore[union-attr]
    if ready != b"1":
        reaper.wait()
        log.warning("the Ray reaper did not start (exit %s); a killed run may leave Ray processes behind",
                    reaper.returncode)
        return None
    return reaper


def check_executor(name: str) -> None:
    """:class:`ConfigError` unless ``name`` is an executor that can run here (Ray installed for ray)."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("the ray executor needs Ray: pip install 'transferlab[ray]'")


def make_executor(name: str, jobs: int | None = None, *, address: str | None = None,
                  threads_per_worker: int = 1, experiment: str | None = None) -> Executor:
    """An executor by name; ``jobs`` defaults to the available CPUs (with ``address``, Ray's cluster
    CPUs; 1 for ``serial``). ``experiment`` names a kind that process workers import at start-up."""
    check_executor(name)
    if name == "serial":
        return Executor(1)
    if name == "process":
        return ProcessExecutor(jobs or available_cpus(), threads_per_worker, experiment)
    return RayExecutor(jobs or available_cpus(), address, threads_per_worker, jobs_given=jobs)
