"""Edge cases: dying workers, odd run_batch returns, duplicate cells, odd spec values, claims."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from transferlab.errors import ConfigError
from transferlab.experiments import Experiment, ExperimentConfig, Results, register
from transferlab.sweep import load_spec, open_store, run_sweep, spec_from_dict
from transferlab.sweep.store import claim_owner

from .conftest import write_spec


def test_a_dying_worker_fails_alone(tmp_path):
    spec = spec_from_dict({"experiment": "toy", "params": {"n": 10},
                           "grid": {"mu": [0.0, 1.0, 2.0], "fail": ["none", "exit"]}})
    summary = run_sweep(spec, tmp_path / "die.db", executor="process", jobs=2, batch_size=2)
    with open_store(tmp_path / "die.db") as st:
        cells = st.cells()
    assert (summary.ok, summary.failed) == (3, 3)
    assert {c.config["fail"] for c in cells if c.status == "ok"} == {"none"}
    assert all("worker process died" in c.error for c in cells if c.status == "failed")


class OddConfig(ExperimentConfig):
    x: int = 0
    shape: str = "generator"


@register
class OddRows(Experiment):
    """Returns rows in odd containers (a generator) or too few of them."""

    name, version, Config = "odd-rows", "1", OddConfig

    def run_batch(self, cells):
        if cells[0].config.shape == "short" and len(cells) > 1:
            return [{"x": 1.0}]
        return ({"x": float(c.config.x)} for c in cells)

    def analyze(self, table):
        return Results()


def test_run_batch_may_return_any_iterable_and_short_batches_fail(tmp_path):
    gen = spec_from_dict({"experiment": "odd-rows", "grid": {"x": [1, 2, 3]}})
    assert run_sweep(gen, tmp_path / "g.db", executor="serial").ok == 3
    short = spec_from_dict({"experiment": "odd-rows", "params": {"shape": "short"}, "grid": {"x": [1, 2]}})
    summary = run_sweep(short, tmp_path / "s.db", executor="serial", batch_size=2)
    assert summary.failed == 2
    with open_store(tmp_path / "s.db") as st:
        assert {c.error for c in st.cells()} == {"run_batch returned 1 rows for 2 cells"}


@pytest.mark.parametrize(("grid", "message"), [
    ({"mu": [1, 1.0]}, "are the same cell"),
    ({"mu": [float("nan")]}, "grid.mu: non-finite value nan"),
])
def test_duplicate_and_non_finite_grid_values(grid, message):
    with pytest.raises(ConfigError, match=message):
        from transferlab.sweep import expand_cells

        expand_cells(spec_from_dict({"experiment": "toy", "grid": grid}))


@pytest.mark.parametrize(("body", "message"), [
    ('experiment = "toy"\nwhen = 1979-05-27\n', "toy.toml: when: unsupported value"),
    ('experiment = "toy"\n[grid]\nmu = [nan]\n', "toy.toml: grid.mu: non-finite value nan"),
    ('experiment = "toy"\nseed = -1\n', "toy.toml: seed: Input should be greater than or equal to 0"),
])
def test_odd_spec_values_are_one_line_errors(tmp_path, cli, body, message):
    code, _, err = cli("run", write_spec(tmp_path, body), "--store", tmp_path / "x.db")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.db").exists()


def test_bad_executor_leaves_no_store(tmp_path, cli, toy_spec):
    code, _, err = cli("run", toy_spec, "--store", tmp_path / "g.db", "--executor", "gpu")
    assert code == 2 and "unknown executor 'gpu'" in err
    assert not (tmp_path / "g.db").exists()


def test_bare_words_in_set_stay_strings(toy_spec):
    spec = load_spec(toy_spec, overrides=["params.fail=nan"])
    assert spec.params["fail"] == "nan"
    assert load_spec(toy_spec, overrides=["params.n=12"]).params["n"] == 12


def test_interrupted_force_keeps_finished_cells(tmp_path, toy_spec):
    spec = load_spec(toy_spec)
    store = tmp_path / "f.db"
    run_sweep(spec, store, executor="serial")
    with open_store(store) as st:
        before = {c.key: (c.status, c.result) for c in st.cells()}
        owner = claim_owner("interrupted")
        rows = [(c.key, 7, c.replicate, "toy", "1", "{}") for c in st.cells()]
        assert len(st.claim(rows, owner=owner, run_id=1, package_version="x", force=True, retry_failed=False)) == 20
        st.release(owner)  # as the driver does when a --force run is interrupted
        assert {c.key: (c.status, c.result) for c in st.cells()} == before


def test_a_live_owner_on_this_host_keeps_its_claims_past_the_lease(tmp_path):
    run_sweep(spec_from_dict({"experiment": "toy", "grid": {"mu": [0.0]}}), tmp_path / "l.db", executor="serial")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = f"{socket.gethostname()}:{sleeper.pid}:tok"
        with open_store(tmp_path / "l.db") as st:
            key = st.cells()[0].key
            st._conn.execute("UPDATE cells SET claimed_by = ?, claim_expires = ? WHERE key = ?",
                             (live, time.time() - 1, key))
            row = [(key, 0, 0, "toy", "1", "{}")]
            assert st.claim(row, owner=claim_owner("other"), run_id=2, package_version="x", force=True,
                            retry_failed=False) == []
            sleeper.kill()
            sleeper.wait()
            assert st.claim(row, owner=claim_owner("other"), run_id=2, package_version="x", force=True,
                            retry_failed=False) == [key]
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                children = open(f"/proc/{parent}/task/{task}/children").read().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def test_sigkill_of_a_process_run_leaves_no_worker(tmp_path):
    spec = write_spec(tmp_path, 'experiment = "toy"\n[params]\nsleep = 0.2\n[grid]\nmu = {range = [0, 40, 1]}\n')
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store",
                             str(tmp_path / "k.db"), "--executor", "process", "--jobs", "2", "--batch-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    workers: set[int] = set()
    while len(workers) < 2 and time.time() < deadline:
        time.sleep(0.2)
        workers = _descendants(proc.pid)
    assert len(workers) >= 2, "the process executor did not start its workers"
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and "Z" not in open(f"/proc/{w}/stat").read().split()[2]]
    assert not alive, f"workers outlived their driver: {alive}"
