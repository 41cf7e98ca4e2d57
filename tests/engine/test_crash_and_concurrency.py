"""Crash safety (SIGKILL mid-run, then resume) and two concurrent runs on one store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

from transferlab.sweep import load_spec, open_store, run_sweep

from .conftest import write_spec

SLOW_SPEC = """
experiment = "toy"
seed = 3
[params]
n = 20
sleep = {sleep}
[grid]
mu = {{range = [0, {cells}, 1]}}
[run]
executor = "serial"
batch_size = 2
"""


def launch(spec, store, trace, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TRANSFERLAB_TOY_TRACE": str(trace)}
    return subprocess.Popen(
        [sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(store), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def ok_keys(store) -> set[str]:
    if not store.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as conn:
            return {k for (k,) in conn.execute("SELECT key FROM cells WHERE status = 'ok'")}
    except sqlite3.OperationalError:
        return set()


def table(store) -> dict[str, str]:
    with open_store(store) as st:
        return {c.key: json.dumps(c.result, sort_keys=True) for c in st.cells() if c.status == "ok"}


def test_sigkill_then_resume_completes_each_cell_once(tmp_path):
    cells = 40
    spec = write_spec(tmp_path, SLOW_SPEC.format(sleep=0.05, cells=cells))
    store, trace = tmp_path / "crash.db", tmp_path / "trace.txt"
    proc = launch(spec, store, trace)
    deadline = time.time() + 120
    while len(ok_keys(store)) < 10:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = ok_keys(store)
    assert 10 <= len(committed) < cells
    computed_before = Counter(trace.read_text().split())

    resumed = launch(spec, store, trace)
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    counts = Counter(trace.read_text().split())
    assert len(ok_keys(store)) == cells
    assert all(counts[k] == 1 for k in committed), "a committed cell was recomputed"
    assert set(counts) == set(ok_keys(store))
    assert all(counts[k] - computed_before[k] == 1 for k in set(counts) - committed)

    reference = tmp_path / "reference.db"
    run_sweep(load_spec(spec), reference, executor="serial")
    assert table(store) == table(reference)
    with open_store(store) as st:
        assert st.counts() == {"ok": cells, "failed": 0, "running": 0}
        runs = st.runs()
    assert [r["status"] for r in runs] == ["running", "finished"]  # the killed run never finished
    assert [r["state"] for r in runs] == ["interrupted", "finished"]  # its driver is gone
    assert runs[0]["cells_ok"] == len(committed) and runs[1]["cells_ok"] == cells - len(committed)


def test_two_runs_on_one_store_at_once(tmp_path):
    cells = 60  # 3 s of work per run: far longer than a process start, so both runs get cells
    spec = write_spec(tmp_path, SLOW_SPEC.format(sleep=0.05, cells=cells))
    store, trace = tmp_path / "shared.db", tmp_path / "trace.txt"
    procs = [launch(spec, store, trace) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    counts = Counter(trace.read_text().split())
    assert len(counts) == cells and set(counts.values()) == {1}, "a cell was computed twice"
    with open_store(store) as st:
        assert st.counts() == {"ok": cells, "failed": 0, "running": 0}
        assert sqlite3.connect(store).execute("PRAGMA integrity_check").fetchone() == ("ok",)
        per_run = [r["cells_ok"] for r in st.runs()]
    assert sum(per_run) == cells and min(per_run) > 0, f"both runs should share the work: {per_run}"
    reference = tmp_path / "reference.db"
    run_sweep(load_spec(spec), reference, executor="serial", force=True)
    assert table(store) == table(reference)
