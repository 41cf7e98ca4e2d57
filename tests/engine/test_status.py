"""``transferlab status`` on a store filled through the public store API: cells that did not
converge are counted, and a killed run shows as interrupted with the cells it committed."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from transferlab.sweep.store import CLAIM_LEASE_S, CellOutcome, Store, claim_owner, open_store, result_converged

TRANSFERLAB = Path(sys.executable).with_name("transferlab")


def start_run(st: Store, cells_total: int) -> int:
    return st.start_run(experiment="toy", spec_json="{}", spec_text=None, spec_path=None, executor="serial",
                        jobs=1, package_version="test", git_commit=None, cells_total=cells_total)


def claim(st: Store, keys: list[str], owner: str, run_id: int) -> list[str]:
    rows = [(key, 0, 0, "toy", "1", json.dumps({"mu": i})) for i, key in enumerate(keys)]
    return st.claim(rows, owner=owner, run_id=run_id, package_version="test", force=False, retry_failed=False)


def outcome(key: str, result: dict | None) -> CellOutcome:
    now = time.time()
    status, error = ("ok", None) if result is not None else ("failed", "RuntimeError: boom")
    return CellOutcome(key, status, None if result is None else json.dumps(result), error, None, now, now, 0.5, 1,
                       socket.gethostname())


RESULTS = {
    "a": {"risk": 0.1, "converged": True, "stop_step": 40},
    "b": {"risk": 1.0, "converged": False, "stop_step": 10000},
    "c": {"risk": 0.2, "converged": [True, True]},
    "d": {"risk": 0.3, "converged": [True, False, True]},
    "e": {"mean": 0.0},  # a kind that trains nothing
    "f": None,  # failed
}

KILLED_RUN = textwrap.dedent("""
    import json, os, signal, sys, time
    from transferlab.sweep.store import CellOutcome, claim_owner, open_store
    st = open_store(sys.argv[1])
    run_id = st.start_run(experiment="toy", spec_json="{}", spec_text=None, spec_path=None, executor="serial",
                          jobs=1, package_version="test", git_commit=None, cells_total=5)
    owner = claim_owner("killed")
    keys = [f"k{i}" for i in range(5)]
    st.claim([(k, 0, 0, "toy", "1", "{}") for k in keys], owner=owner, run_id=run_id, package_version="test",
             force=False, retry_failed=False)
    now = time.time()
    st.commit_outcomes([CellOutcome(k, "ok", json.dumps({"mean": 1.0}), None, None, now, now, 0.1, 1, "h")
                        for k in keys[:3]], owner=owner, run_id=run_id, package_version="test")
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with one finished run (4 trained ok cells, 2 of them unconverged, one untrained ok
    cell, one failed cell) and one run killed after committing 3 of its 5 claimed cells."""
    path = tmp_path / "status.db"
    with open_store(path, create=True) as st:
        st.bind_experiment("toy")
        run_id = start_run(st, len(RESULTS))
        owner = claim_owner("finished")
        assert claim(st, list(RESULTS), owner, run_id) == list(RESULTS)
        st.commit_outcomes([outcome(k, r) for k, r in RESULTS.items()], owner=owner, run_id=run_id,
                           package_version="test")
        st.finish_run(run_id, "finished")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return path


def test_result_converged_convention():
    assert result_converged({"converged": True}) and result_converged({"mean": 1.0}) and result_converged(None)
    assert not result_converged({"converged": False})
    assert result_converged({"converged": [True, True]})
    assert not result_converged({"converged": [True, False]})


def test_store_counts_unconverged_and_interrupted(store):
    with open_store(store) as st:
        assert st.counts() == {"ok": 8, "failed": 1, "running": 2}
        assert st.unconverged() == 2
        assert st.unfinished() == {"running": 0, "interrupted": 2}
        runs = st.runs()
    assert [(r["status"], r["state"]) for r in runs] == [("finished", "finished"), ("running", "interrupted")]
    assert [(r["cells_ok"], r["cells_failed"]) for r in runs] == [(5, 1), (3, 0)]


def test_status_command_reports_them(store):
    done = subprocess.run([str(TRANSFERLAB), "status", str(store)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert (f"{store}: experiment 'toy': 8 ok (2 did not converge), 1 failed, 0 running, "
            "2 left unfinished by interrupted runs") in out
    assert "│ 2 │ interrupted │" in out
    assert "run 2 was killed (its driver, pid" in out and "after committing 3 cells" in out


def test_a_live_run_is_running_and_a_silent_remote_run_interrupted(tmp_path):
    with open_store(tmp_path / "s.db", create=True) as st:
        here = start_run(st, 1)
        remote_live, remote_silent = start_run(st, 1), start_run(st, 1)
        with sqlite3.connect(tmp_path / "s.db") as conn:  # runs of a driver on another host
            conn.execute("UPDATE runs SET host = 'elsewhere', heartbeat = ? WHERE run_id = ?",
                         (time.time(), remote_live))
            conn.execute("UPDATE runs SET host = 'elsewhere', heartbeat = ? WHERE run_id = ?",
                         (time.time() - 2 * CLAIM_LEASE_S, remote_silent))
        states = {r["run_id"]: r["state"] for r in st.runs()}
    assert states == {here: "running", remote_live: "running", remote_silent: "interrupted"}
