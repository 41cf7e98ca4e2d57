"""A real local Ray instance runs a sweep and stores the same numbers as the serial executor, and
the instance transferlab starts never outlives its driver: closed normally or killed by SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from transferlab.sweep import load_spec, run_sweep

from .conftest import write_spec
from .test_crash_and_concurrency import ok_keys
from .test_driver import stored_results
from .test_review_cases import _descendants

pytestmark = pytest.mark.ray


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pids: set[int], wait_s: float) -> dict[int, str]:
    """Those of ``pids`` still running (zombies excluded) after waiting up to ``wait_s`` seconds."""
    deadline = time.time() + wait_s
    while True:
        alive = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                alive[pid] = _cmdline(pid)
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def test_ray_executor_matches_serial_and_shuts_down(toy_spec, tmp_path):
    spec = load_spec(toy_spec)
    seen: dict[int, str] = {}  # the Ray processes below this one (and the reaper), by pid

    def note(event: object) -> None:
        seen.update((pid, name) for pid in _descendants(os.getpid()) if "ray" in (name := _cmdline(pid)))

    ray_summary = run_sweep(spec, tmp_path / "ray.db", executor="ray", jobs=2, batch_size=3, progress=note)
    assert (ray_summary.ok, ray_summary.failed) == (20, 0)
    assert any("raylet" in name for name in seen.values()), f"no raylet seen during the run: {seen}"
    leftover = _alive(set(seen), wait_s=30)
    assert not leftover, f"Ray processes outlived the run: {leftover}"
    run_sweep(spec, tmp_path / "serial.db", executor="serial")
    assert stored_results(tmp_path / "ray.db") == stored_results(tmp_path / "serial.db")
    import ray  # part of the dev extra: a missing Ray is a failure, not a skip

    assert not ray.is_initialized(), "the executor must shut down the instance it started"


def test_sigkill_of_a_ray_run_leaves_no_ray_process(tmp_path):
    spec = write_spec(tmp_path, 'experiment = "toy"\n[params]\nsleep = 0.2\n[grid]\nmu = {range = [0, 200, 1]}\n')
    store = tmp_path / "k.db"
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(store),
                             "--executor", "ray", "--jobs", "1", "--batch-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(ok_keys(store)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the Ray run made no progress"
            time.sleep(0.2)
        ray_processes = _descendants(proc.pid)
        names = " | ".join(_cmdline(pid) for pid in ray_processes)
        assert "raylet" in names and "Agent" in names, f"expected a raylet and its agents: {names}"
    finally:
        proc.kill()
        proc.wait()
    leftover = _alive(ray_processes, wait_s=30)
    assert not leftover, f"Ray processes outlived their killed driver: {leftover}"
