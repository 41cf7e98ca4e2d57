"""The driver: runs a spec's pending cells on an executor and alone writes the store.

Flow: expand and validate every cell (errors before the store is touched) -> skip cells already
``ok`` (resume and cache) -> group the rest into batches of equal shape -> claim each batch just
before dispatch -> commit each finished batch in one transaction. A batch that raises is retried
cell by cell, so one bad cell fails alone; a cell whose row holds NaN/inf, or that raises, is stored
as failed with the reason and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab import __version__
from transferlab.experiments import get_experiment
from transferlab.provenance import git_commit
from transferlab.sweep.executors import BatchResult, Executor, check_executor, make_executor
from transferlab.sweep.planner import iter_batches
from transferlab.sweep.spec import PlannedCell, Spec, expand_cells
from transferlab.sweep.store import CLAIM_LEASE_S, CellOutcome, Store, claim_owner, open_store, renew_lease

__all__ = ["ProgressEvent", "RunSummary", "run_sweep"]

log = logging.getLogger("transferlab.sweep")


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of a run: ``done`` of ``total`` pending cells finished (``ok`` + ``failed``)."""

    total: int
    done: int
    ok: int
    failed: int
    elapsed: float


@dataclass(frozen=True)
class RunSummary:
    """What a run did. ``skipped``: cells already done or claimed by another live run."""

    store: Path
    run_id: int
    cells: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    failed_in_store: int

    def line(self) -> str:
        return (f"{self.cells} cells: {self.ok} computed ok, {self.failed} failed, {self.skipped} already done "
                f"or taken by another run; store {self.store} ({self.seconds:.1f} s)")


def _row_problem(row: Any) -> str | None:
    """Why ``row`` cannot be stored (not a flat JSON-able dict, or a non-finite number), or None."""
    if not isinstance(row, dict):
        return f"run_batch returned a {type(row).__name__}, not a dict"

    def bad(value: Any, path: str) -> str | None:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return None
        if isinstance(value, (int, float)):
            return None if math.isfinite(value) else f"non-finite value in result field {path!r}: {value}"
        if isinstance(value, (list, tuple)):
            return next((p for i, v in enumerate(value) if (p := bad(v, f"{path}[{i}]"))), None)
        if isinstance(value, dict):
            return next((p for k, v in value.items() if (p := bad(v, f"{path}.{k}"))), None)
        return f"result field {path!r} has unsupported type {type(value).__name__}"

    return next((p for k, v in row.items() if (p := bad(v, str(k)))), None)


def _outcomes(cells: Sequence[PlannedCell], result: BatchResult) -> list[CellOutcome]:
    n = len(cells)
    seconds = (result.finished - result.started) / n
    common = dict(started=result.started, finished=result.finished, seconds=seconds, batch_cells=n, host=result.host)
    if result.error is not None:
        return [CellOutcome(p.cell.key, "failed", None, result.error, result.traceback, **common) for p in cells]
    rows = result.rows if result.rows is not None else []
    if len(rows) != n:
        error = f"run_batch returned {len(rows)} rows for {n} cells"
        return [CellOutcome(p.cell.key, "failed", None, error, None, **common) for p in cells]
    outcomes = []
    for p, row in zip(cells, rows):
        problem = _row_problem(row)
        if problem:
            outcomes.append(CellOutcome(p.cell.key, "failed", None, problem, None, **common))
        else:
            outcomes.append(CellOutcome(p.cell.key, "ok", json.dumps(row, allow_nan=False), None, None, **common))
    return outcomes


def run_sweep(
    spec: Spec,
    store: str | Path | None = None,
    *,
    executor: str | None = None,
    jobs: int | None = None,
    batch_size: int | None = None,
    retry_failed: bool = False,
    force: bool = False,
    address: str | None = None,
    threads_per_worker: int = 1,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> RunSummary:
    """Run every pending cell of ``spec`` and record it in the store.

    Args:
        spec: a validated spec (:func:`transferlab.sweep.load_spec`).
        store: store path (default: the spec's ``run.store`` or ``<spec stem>.db``).
        executor, jobs, batch_size, address: override the spec's ``[run]`` table.
        retry_failed: recompute cells stored as failed. force: recompute every cell.
        threads_per_worker: torch/BLAS threads in each process or Ray worker.
        progress: called after every committed batch.
    """
    kind = get_experiment(spec.experiment)
    planned = expand_cells(spec)
    store_path = Path(store) if store else spec.default_store()
    executor_name = executor or spec.run.executor
    check_executor(executor_name)  # before the store is touched
    batch_size = batch_size or spec.run.batch_size
    jobs = jobs or spec.run.jobs
    started = time.time()
    with open_store(store_path, create=True) as st:
        st.bind_experiment(kind.name)
        known = st.statuses(p.cell.key for p in planned)
        skip = {"ok"} if not force else set()
        if not (retry_failed or force):
            skip.add("failed")
        todo = [p for p in planned if known.get(p.cell.key) not in skip]
        run_id = st.start_run(
            experiment=kind.name, spec_json=json.dumps(spec.model_dump(mode="json")), spec_text=spec.text,
            spec_path=spec.source, executor=executor_name, jobs=jobs or 0,
            package_version=__version__, git_commit=git_commit(Path(__file__).parent), cells_total=len(planned),
        )
        log.info("%s: %d cells, %d to compute, executor %s", spec.label, len(planned), len(todo), executor_name)
        dispatch = _Dispatch(
            experiment=kind.name, version=kind.version, store=st, owner=claim_owner(uuid.uuid4().hex),
            run_id=run_id, force=force, retry_failed=retry_failed, total=len(todo), started=started,
            progress=progress, skipped=len(planned) - len(todo),
            make_executor=lambda: make_executor(executor_name, jobs, address=address or spec.run.address,
                                                threads_per_worker=threads_per_worker, experiment=kind.name),
        )
        status = "interrupted"
        try:
            if todo:
                dispatch.run(iter_batches(kind, todo, batch_size))
            status = "finished"
        finally:
            st.finish_run(run_id, status)
        failed_in_store = sum(1 for s in st.statuses(p.cell.key for p in planned).values() if s == "failed")
    return RunSummary(store_path, run_id, len(planned), dispatch.skipped, dispatch.ok, dispatch.failed,
                      time.time() - started, failed_in_store)


@dataclass
class _Dispatch:
    """Keeps a window of batches in flight on an executor and commits each as it finishes."""

    experiment: str
    version: str
    store: Store
    owner: str
    run_id: int
    force: bool
    retry_failed: bool
    total: int
    started: float
    progress: Callable[[ProgressEvent], None] | None
    make_executor: Callable[[], Executor]
    skipped: int = 0
    ok: int = 0
    failed: int = 0

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(self.total, self.ok + self.failed, self.ok, self.failed,
                                        time.time() - self.started))

    def _claim(self, batch: list[PlannedCell]) -> list[PlannedCell]:
        rows = [(p.cell.key, p.cell.seed, p.cell.replicate, self.experiment, self.version,
                 json.dumps(p.config_json, sort_keys=True)) for p in batch]
        claimed = set(self.store.claim(rows, owner=self.owner, run_id=self.run_id, package_version=__version__,
                                       force=self.force, retry_failed=self.retry_failed))
        self.skipped += len(batch) - len(claimed)
        return [p for p in batch if p.cell.key in claimed]

    def run(self, batches: Iterable[list[PlannedCell]]) -> None:
        """Dispatch every batch and commit each as it finishes.

        ``queue`` holds ``(cells, already_claimed)``. A batch that raises comes back cell by cell
        (still claimed). When a worker process dies, every batch of that pool comes back cell by
        cell as *suspects*, and suspects run one at a time, so the cell that kills its worker fails
        alone and its neighbours are computed normally.
        """
        queue: deque[tuple[list[PlannedCell], bool]] = deque((b, False) for b in batches)
        inflight: dict[Future[BatchResult], tuple[list[PlannedCell], int]] = {}
        suspects: set[str] = set()
        token = self.owner.rsplit(":", 1)[1]
        heartbeat = _Heartbeat(self.store.path, self.owner, self.run_id)
        ex: Executor | None = None
        pool = 0  # generation of the executor; a broken pool is replaced once
        try:
            Store._live_tokens.add(token)
            heartbeat.start()
            ex = self.make_executor()
            self._report()
            while queue or inflight:
                window = 1 if suspects or ex.name == "serial" else 2 * ex.jobs
                while queue and len(inflight) < window:
                    batch, already_claimed = queue.popleft()
                    cells = batch if already_claimed else self._claim(batch)
                    if cells:
                        inflight[ex.submit(self.experiment, [p.cell for p in cells])] = (cells, pool)
                if not inflight:
                    continue
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    cells, generation = inflight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        if generation == pool:  # first failure seen from this pool: replace it
                            ex.close()
                            ex = self.make_executor()
                            pool += 1
                        alone = len(cells) == 1 and cells[0].cell.key in suspects
                        if not alone:
                            suspects.update(p.cell.key for p in cells)
                            queue.extendleft(([p], True) for p in reversed(cells))
                            continue
                        result = _executor_failure(cells, "worker process died while computing this cell "
                                                          "(crash, os._exit or out of memory)")
                    except Exception as exc:  # executor-level failure (e.g. a Ray task error)
                        result = _executor_failure(cells, f"executor error: {type(exc).__name__}: {exc}")
                    if result.error is not None and len(cells) > 1:
                        log.info("batch of %d failed (%s); retrying its cells one by one", len(cells), result.error)
                        queue.extendleft(([p], True) for p in reversed(cells))
                        continue
                    suspects.difference_update(p.cell.key for p in cells)
                    self._commit(cells, result)
        finally:
            heartbeat.stop()
            if ex is not None:
                ex.close()
            self.store.release(self.owner)
            Store._live_tokens.discard(token)

    def _commit(self, cells: list[PlannedCell], result: BatchResult) -> None:
        outcomes = _outcomes(cells, result)
        written = self.store.commit_outcomes(outcomes, owner=self.owner, run_id=self.run_id,
                                             package_version=__version__)
        for o in outcomes:
            if o.key not in written:
                self.skipped += 1
                log.warning("cell %s: claim lost to another run (its lease expired); result discarded", o.key[:12])
            elif o.status == "ok":
                self.ok += 1
            else:
                self.failed += 1
                log.warning("cell %s failed: %s", o.key[:12], o.error)
        self._report()


def _executor_failure(cells: Sequence[PlannedCell], error: str) -> BatchResult:
    now = time.time()
    return BatchResult(None, error, None, now, now, "")


class _Heartbeat:
    """Renews the lease of this driver's claims and its run's heartbeat every third of the lease,
    from a daemon thread, so a batch longer than the lease is not taken over by a run on another
    host, and ``status`` shows the run as running (not interrupted) while it is."""

    def __init__(self, path: Path, owner: str, run_id: int, period: float = CLAIM_LEASE_S / 3):
        self._path, self._owner, self._run_id, self._period = path, owner, run_id, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="transferlab-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._period):
            try:
                renew_lease(self._path, self._owner, self._run_id)
            except Exception as exc:  # a missed beat only shortens the lease; never kill the run
                log.warning("could not renew claims: %s", exc)
