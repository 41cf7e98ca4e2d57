"""The results store: one SQLite file in WAL mode, written only by the driver.

Tables:

- ``meta``: ``format = transferlab-store``, ``schema``, ``experiment`` -- identifies the file.
- ``runs``: one row per ``transferlab run``: spec (JSON and text), executor, host, pid, versions,
  times, the cells it committed so far, and its ``heartbeat`` (renewed with its claims, so a run
  killed on another host shows as interrupted once its lease expires).
- ``cells``: one row per cell key (the primary key, so a cell can never appear twice): config,
  status (``ok`` | ``failed`` | ``running`` = never finished), result JSON, error text and traceback,
  timings, host, package version, run id, attempts, and the claim (``claimed_by``,
  ``claim_expires``) of the driver computing it. A claim never changes a cell's status, so an
  interrupted ``--force`` leaves finished cells as they were.

Crash safety: each finished batch is committed in one transaction, so a killed sweep loses at most
the batches in flight, and a committed cell is never recomputed on resume. Concurrency: before a
batch is dispatched the driver *claims* its cells in a write transaction; another driver skips
cells claimed by a live owner (same host: its process exists; other host: the lease, renewed by
the owner's heartbeat, has not expired), so two runs on one store neither duplicate nor corrupt.
``synchronous=NORMAL`` in WAL mode is safe against process crashes (a power cut may lose the last
commits, never corrupt the file).

Creation is atomic: a new store is built complete under a temporary name in the same directory and
hard-linked into place (the link fails if the name exists), so runs racing to create one store all
end up using the same file, and a file transferlab made is never seen empty or half made. An
existing empty file, which is not a store, is refused.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferlab.errors import StoreError

__all__ = ["Store", "StoredCell", "CellOutcome", "open_store", "claim_owner", "renew_lease", "result_converged"]

FORMAT = "transferlab-store"
SQLITE_HEADER = b"SQLite format 3\x00"
SCHEMA = "1"
CLAIM_LEASE_S = 600.0

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL, finished REAL, status TEXT NOT NULL DEFAULT 'running',
    experiment TEXT NOT NULL, spec_json TEXT NOT NULL, spec_text TEXT, spec_path TEXT,
    executor TEXT, jobs INTEGER, host TEXT, pid INTEGER, package_version TEXT, git_commit TEXT,
    cells_total INTEGER, cells_ok INTEGER, cells_failed INTEGER, heartbeat REAL
);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    experiment TEXT NOT NULL, version TEXT NOT NULL, seed INTEGER NOT NULL, replicate INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'running')),
    result TEXT, error TEXT, traceback TEXT,
    started REAL, finished REAL, seconds REAL, batch_cells INTEGER,
    host TEXT, package_version TEXT, run_id INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT, claim_expires REAL
);
CREATE INDEX IF NOT EXISTS cells_status ON cells(status);
"""


def claim_owner(token: str) -> str:
    """The owner string of a claim: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _owner_alive(owner: str | None, expires: float | None, now: float, own_pid_tokens: frozenset[str]) -> bool:
    """Whether the driver that wrote ``owner`` may still be computing: on this host, its process
    exists (or, in this process, its run is still going); on another host, its lease (renewed by a
    heartbeat) has not expired."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname():
        return expires is not None and expires > now
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return token in own_pid_tokens
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _run_state(run: dict[str, Any], now: float) -> str:
    """``finished``, ``running`` or ``interrupted``: a run still marked running is interrupted when
    its driver is gone (on this host, its process no longer exists; on another host, its heartbeat
    is older than the lease)."""
    if run["status"] != "running":
        return str(run["status"])
    if run["host"] == socket.gethostname() and run["pid"] is not None:
        alive = run["pid"] == os.getpid() or _pid_alive(int(run["pid"]))
    else:
        beat = run.get("heartbeat") or run["started"]
        alive = beat + CLAIM_LEASE_S > now
    return "running" if alive else "interrupted"


def result_converged(result: dict[str, Any] | None) -> bool:
    """False when a stored result row says its training did not converge: a field ``converged``
    that is ``false``, or a list of per-instance flags of which any is ``false``. Rows without the
    field (kinds that train nothing) count as converged."""
    flag = (result or {}).get("converged", True)
    if isinstance(flag, list):
        return all(item is not False for item in flag)
    return flag is not False


@dataclass(frozen=True)
class StoredCell:
    """One row of ``cells`` as Python values."""

    key: str
    version: str
    replicate: int
    config: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    error: str | None
    seconds: float | None
    host: str | None
    run_id: int | None
    attempts: int


@dataclass(frozen=True)
class CellOutcome:
    """What the driver commits for one finished cell."""

    key: str
    status: str  # "ok" | "failed"
    result_json: str | None  # the result row as JSON text (encoded once, by the driver)
    error: str | None
    traceback: str | None
    started: float
    finished: float
    seconds: float
    batch_cells: int
    host: str


class Store:
    """An open results store. Use :func:`open_store`; close with :meth:`close` or as a context manager."""

    # Claims taken by drivers living in this process, by token (a finished run drops its token).
    _live_tokens: set[str] = set()

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``), committed or rolled back; an
        SQLite error (locked past the busy timeout, read-only, disk full) becomes :class:`StoreError`."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: cannot lock the store for writing ({exc})") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot write the store ({exc})") from None
            raise

    # -- meta ------------------------------------------------------------------------------------
    def experiment(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'experiment'").fetchone()
        return row[0] if row else None

    def bind_experiment(self, name: str) -> None:
        """Record which experiment kind this store holds; a store holds exactly one kind."""
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'experiment'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('experiment', ?)", (name,))
            elif row[0] != name:
                raise StoreError(f"{self.path}: this store holds experiment {row[0]!r}, not {name!r}; "
                                 "use another --store")

    # -- runs ------------------------------------------------------------------------------------
    def start_run(self, *, experiment: str, spec_json: str, spec_text: str | None, spec_path: str | None,
                  executor: str, jobs: int, package_version: str, git_commit: str | None, cells_total: int) -> int:
        """Record a new run of this process (status ``running``, no cells yet); return its id."""
        with self._write() as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            if "heartbeat" not in columns:  # a store made before runs had a heartbeat
                conn.execute("ALTER TABLE runs ADD COLUMN heartbeat REAL")
            now = time.time()
            cur = conn.execute(
                "INSERT INTO runs (started, experiment, spec_json, spec_text, spec_path, executor, jobs, host, pid,"
                " package_version, git_commit, cells_total, cells_ok, cells_failed, heartbeat)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,0,?)",
                (now, experiment, spec_json, spec_text, spec_path, executor, jobs, socket.gethostname(),
                 os.getpid(), package_version, git_commit, cells_total, now),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str) -> None:
        """Mark a run ``finished`` or ``interrupted`` (its cell counts are kept by each commit)."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET finished = ?, status = ? WHERE run_id = ?", (time.time(), status, run_id))

    def runs(self) -> list[dict[str, Any]]:
        """Every run as a dict of its columns, plus ``state``: ``finished``, ``running``, or
        ``interrupted`` (stopped early, or still marked running but its driver is gone: killed).
        ``cells_ok`` and ``cells_failed`` count the cells it committed, also for a killed run."""
        cur = self._conn.execute("SELECT * FROM runs ORDER BY run_id")
        names = [d[0] for d in cur.description]
        now = time.time()
        runs = [dict(zip(names, row)) for row in cur.fetchall()]
        for run in runs:
            run["state"] = _run_state(run, now)
        return runs

    def latest_spec(self) -> tuple[dict[str, Any], str | None]:
        """The JSON and text of the newest run's spec."""
        row = self._conn.execute("SELECT spec_json, spec_text FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: the store has no runs yet")
        return json.loads(row[0]), row[1]

    # -- cells -----------------------------------------------------------------------------------
    def statuses(self, keys: Iterable[str]) -> dict[str, str]:
        """Status of each given key that has a row (chunked to respect SQLite's variable limit)."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self._conn.execute(f"SELECT key, status FROM cells WHERE key IN ({marks})", chunk).fetchall())
        return found

    def claim(self, cells: Sequence[tuple[str, int, int, str, str, str]], *, owner: str, run_id: int,
              package_version: str, force: bool, retry_failed: bool) -> list[str]:
        """Claim the given cells for ``owner``; return the keys actually claimed.

        ``cells`` holds ``(key, seed, replicate, experiment, version, config_json)``. A cell is
        skipped when another live owner holds it, when it is ``ok`` (unless ``force``), or when it is
        ``failed`` (unless ``retry_failed`` or ``force``). New cells get status ``running``.
        """
        now = time.time()
        own = frozenset(self._live_tokens)
        claimed: list[str] = []
        with self._write() as conn:
            for key, seed, replicate, experiment, version, config_json in cells:
                row = conn.execute(
                    "SELECT status, claimed_by, claim_expires FROM cells WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    status, by, expires = row
                    if by and by != owner and _owner_alive(by, expires, now, own):
                        continue
                    if status == "ok" and not force:
                        continue
                    if status == "failed" and not (retry_failed or force):
                        continue
                    conn.execute("UPDATE cells SET claimed_by = ?, claim_expires = ? WHERE key = ?",
                                 (owner, now + CLAIM_LEASE_S, key))
                else:
                    conn.execute(
                        "INSERT INTO cells (key, experiment, version, seed, replicate, config, status, run_id,"
                        " package_version, claimed_by, claim_expires) VALUES (?,?,?,?,?,?,'running',?,?,?,?)",
                        (key, experiment, version, seed, replicate, config_json, run_id, package_version, owner,
                         now + CLAIM_LEASE_S),
                    )
                claimed.append(key)
        return claimed

    def commit_outcomes(self, outcomes: Sequence[CellOutcome], *, owner: str, run_id: int,
                        package_version: str) -> set[str]:
        """Write finished cells in one transaction; return the keys written.

        Only rows still claimed by ``owner`` are written, so a driver whose claim was taken over
        (after its lease expired) cannot overwrite another's result.
        """
        written: set[str] = set()
        ok = failed = 0
        with self._write() as conn:
            for o in outcomes:
                cur = conn.execute(
                    "UPDATE cells SET status = ?, result = ?, error = ?, traceback = ?, started = ?, finished = ?,"
                    " seconds = ?, batch_cells = ?, host = ?, package_version = ?, run_id = ?,"
                    " attempts = attempts + 1, claimed_by = NULL, claim_expires = NULL"
                    " WHERE key = ? AND claimed_by = ?",
                    (o.status, o.result_json, o.error,
                     o.traceback, o.started, o.finished, o.seconds, o.batch_cells, o.host, package_version, run_id,
                     o.key, owner),
                )
                if cur.rowcount:
                    written.add(o.key)
                    ok += o.status == "ok"
                    failed += o.status != "ok"
            conn.execute("UPDATE runs SET cells_ok = COALESCE(cells_ok, 0) + ?,"
                         " cells_failed = COALESCE(cells_failed, 0) + ?, heartbeat = ? WHERE run_id = ?",
                         (ok, failed, time.time(), run_id))
        return written

    def release(self, owner: str) -> None:
        """Drop the claims of ``owner``: cells it created and never finished are deleted, every
        other cell keeps its status."""
        with self._write() as conn:
            conn.execute("DELETE FROM cells WHERE claimed_by = ? AND attempts = 0", (owner,))
            conn.execute("UPDATE cells SET claimed_by = NULL, claim_expires = NULL WHERE claimed_by = ?", (owner,))


    def cells(self, status: str | None = None) -> list[StoredCell]:
        sql = ("SELECT key, version, replicate, config, status, result, error, seconds, host, run_id, attempts"
               " FROM cells"
               + (" WHERE status = ?" if status else "") + " ORDER BY rowid")
        rows = self._conn.execute(sql, (status,) if status else ()).fetchall()
        return [
            StoredCell(key, ver, rep, json.loads(cfg), st, None if res is None else json.loads(res), err, sec, host,
                       rid, att)
            for key, ver, rep, cfg, st, res, err, sec, host, rid, att in rows
        ]

    def counts(self) -> dict[str, int]:
        """Cells by status: ``ok``, ``failed``, ``running`` (claimed, not finished)."""
        counts = {"ok": 0, "failed": 0, "running": 0}
        counts.update(self._conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())
        return counts

    def unfinished(self) -> dict[str, int]:
        """Cells marked ``running``, split into ``running`` (their driver is alive) and
        ``interrupted`` (left by a killed driver; the next run computes them)."""
        now = time.time()
        own = frozenset(self._live_tokens)
        split = {"running": 0, "interrupted": 0}
        for owner, expires in self._conn.execute(
                "SELECT claimed_by, claim_expires FROM cells WHERE status = 'running'"):
            split["running" if _owner_alive(owner, expires, now, own) else "interrupted"] += 1
        return split

    def unconverged(self) -> int:
        """How many ``ok`` cells say their training did not converge (see :func:`result_converged`)."""
        rows = self._conn.execute(
            "SELECT result FROM cells WHERE status = 'ok' AND result LIKE '%\"converged\"%'")
        return sum(not result_converged(json.loads(result)) for (result,) in rows)

    def total_seconds(self) -> float:
        return float(self._conn.execute("SELECT COALESCE(SUM(seconds), 0) FROM cells").fetchone()[0])


def renew_lease(path: Path, owner: str, run_id: int) -> None:
    """Extend the lease of every claim of ``owner`` and beat the heart of run ``run_id`` (called
    from the driver's heartbeat thread, on its own connection, in one transaction)."""
    conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE cells SET claim_expires = ? WHERE claimed_by = ?", (now + CLAIM_LEASE_S, owner))
        conn.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (now, run_id))
        conn.execute("COMMIT")
    finally:
        conn.close()


def open_store(path: str | Path, *, create: bool = False) -> Store:
    """Open a store; with ``create``, for writing: create it if missing, refuse it if read-only.

    Raises :class:`StoreError` with one line naming the problem -- no such file, a directory, no
    permission, an empty file, not an SQLite file, a damaged file, another program's database, an
    unsupported schema -- never a traceback; a file that is not a store is never written to.
    """
    path = Path(path)
    if create and not os.path.lexists(path):
        _create(path)
    _check_file(path)
    if create and not os.access(path, os.W_OK):
        raise StoreError(f"{path}: the store is read-only (no permission to write it)")
    conn: sqlite3.Connection | None = None
    try:  # mode=rw: never create a file here (a path that vanished since the check stays absent)
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=rw", uri=True, timeout=60.0,
                               isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
        if fmt is None or fmt[0] != FORMAT:
            raise StoreError(f"{path}: an SQLite database, but not a transferlab store")
        schema = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if schema is None or schema[0] != SCHEMA:
            raise StoreError(f"{path}: store schema {schema and schema[0]!r} is not supported (expected {SCHEMA})")
        conn.execute("PRAGMA synchronous = NORMAL")
    except (StoreError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StoreError):
            raise
        raise StoreError(_sqlite_problem(path, exc)) from None
    return Store(path, conn)


def _check_file(path: Path) -> None:
    """:class:`StoreError` unless ``path`` is a readable file that starts like an SQLite database."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise StoreError(f"{path}: no such store") from None
    except IsADirectoryError:
        raise StoreError(f"{path}: is a directory, not a store") from None
    except PermissionError:
        raise StoreError(f"{path}: cannot read the store (permission denied)") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store ({exc.strerror or exc})") from None
    if not header:
        raise StoreError(f"{path}: an empty file, not a transferlab store (transferlab never leaves a store "
                         "empty); remove it or choose another store")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: not a transferlab store (not an SQLite database)")


def _sqlite_problem(path: Path, exc: sqlite3.Error) -> str:
    """The one-line reason SQLite could not read a file that starts like a database."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return f"{path}: a damaged SQLite file, unreadable as a store ({text})"
    if "locked" in text or "busy" in text:
        return f"{path}: the store stayed locked by another process ({text})"
    if not os.access(path.parent, os.W_OK):
        return (f"{path}: cannot open the store: its directory {path.parent} is not writable (SQLite keeps "
                f"{path.name}-wal and {path.name}-shm beside it) ({text})")
    return f"{path}: cannot read the store ({text})"


def _create(path: Path) -> None:
    """Create a complete, empty store at ``path`` unless something is already there.

    The store is built under a temporary name beside ``path`` and hard-linked into place; the link
    fails if ``path`` exists, in which case a concurrent run created it first and that file is used.
    On a file system without hard links the image is copied into a file created exclusively.
    """
    directory = path.parent
    if not directory.is_dir():
        raise StoreError(f"{path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: cannot create the store: the directory {directory} is not writable")
    tmp = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.creating"
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(
                "BEGIN IMMEDIATE;" + _SCHEMA_SQL
                + f"INSERT INTO meta VALUES ('format', '{FORMAT}');"
                + f"INSERT INTO meta VALUES ('schema', '{SCHEMA}');COMMIT;"
            )
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # a concurrent run created it first
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            _copy_exclusive(tmp, path)
    except (sqlite3.Error, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"{path}: cannot create the store ({reason})") from None
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _copy_exclusive(image: Path, path: Path) -> None:
    """Write the bytes of ``image`` to ``path`` if no file is there (for file systems without hard
    links; a reader may see the file half written for the moment the copy takes)."""
    data = image.read_bytes()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
