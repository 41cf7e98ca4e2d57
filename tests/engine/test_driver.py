"""The driver: determinism across executors and batch sizes, failure isolation, resume, retry, force."""

from __future__ import annotations

import json

import pytest

from transferlab.sweep import load_spec, open_store, run_sweep, spec_from_dict

from .conftest import write_spec


def stored_results(path) -> dict[str, tuple[str, str | None]]:
    """key -> (status, canonical result JSON) for every cell of a store."""
    with open_store(path) as st:
        return {c.key: (c.status, json.dumps(c.result, sort_keys=True) if c.result else None) for c in st.cells()}


def test_same_results_for_every_executor_and_batch_size(toy_spec, tmp_path):
    spec = load_spec(toy_spec)
    reference = None
    for executor, jobs, batch_size in [("serial", 1, 64), ("serial", 1, 1), ("process", 2, 3), ("process", 2, 64)]:
        store = tmp_path / f"{executor}-{batch_size}.db"
        summary = run_sweep(spec, store, executor=executor, jobs=jobs, batch_size=batch_size)
        assert (summary.ok, summary.failed) == (20, 0)
        results = stored_results(store)
        reference = reference or results
        assert results == reference, f"{executor} with batch_size={batch_size} differs"


def test_rows_are_what_the_kind_computes(toy_spec, tmp_path):
    # independent check of one stored row against a direct computation with the cell's generator
    from transferlab.sweep import expand_cells

    spec = load_spec(toy_spec)
    run_sweep(spec, tmp_path / "a.db", executor="serial")
    cell = expand_cells(spec)[3].cell
    x = cell.rng().normal(cell.config.mu, cell.config.sigma, size=cell.config.n)
    with open_store(tmp_path / "a.db") as st:
        row = next(c for c in st.cells() if c.key == cell.key)
    assert row.result == {"mean": float(x.mean()), "var": float(x.var(ddof=1))}


def test_nan_and_exceptions_fail_only_their_cells(tmp_path):
    spec = spec_from_dict({"experiment": "toy", "params": {"n": 10},
                           "grid": {"mu": [0.0, 1.0, 2.0], "fail": ["none", "nan", "raise"]}})
    store = tmp_path / "f.db"
    summary = run_sweep(spec, store, executor="serial", batch_size=64)
    assert (summary.ok, summary.failed) == (3, 6)
    with open_store(store) as st:
        failed = st.cells("failed")
        ok = st.cells("ok")
    assert {c.config["fail"] for c in ok} == {"none"}
    errors = {c.config["fail"]: c.error for c in failed}
    assert "non-finite value in result field 'mean': nan" in errors["nan"]
    assert errors["raise"].startswith("RuntimeError: toy cell asked to fail")
    assert all(c.result is None for c in failed)


def test_resume_skips_ok_and_failed_unless_asked(tmp_path, monkeypatch):
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("TRANSFERLAB_TOY_TRACE", str(trace))
    spec = spec_from_dict({"experiment": "toy", "grid": {"mu": [0.0, 1.0], "fail": ["none", "nan"]}})
    store = tmp_path / "r.db"
    first = run_sweep(spec, store, executor="serial")
    assert (first.ok, first.failed, first.skipped) == (2, 2, 0)
    again = run_sweep(spec, store, executor="serial")
    assert (again.ok, again.failed, again.skipped) == (0, 0, 4)
    retry = run_sweep(spec, store, executor="serial", retry_failed=True)
    assert (retry.ok, retry.failed, retry.skipped) == (0, 2, 2)
    forced = run_sweep(spec, store, executor="serial", force=True)
    assert (forced.ok, forced.failed) == (2, 2)
    lines = trace.read_text().split()
    # each 'none' cell computed twice (first run + force), each 'nan' cell 3 times (first, retry, force)
    assert sorted(lines.count(k) for k in set(lines)) == [2, 2, 3, 3]


def test_store_holds_one_experiment_kind(tmp_path):
    from transferlab.errors import StoreError

    store = tmp_path / "x.db"
    run_sweep(spec_from_dict({"experiment": "toy"}), store, executor="serial")
    with open_store(store) as st:
        with pytest.raises(StoreError, match="holds experiment 'toy', not 'other'"):
            st.bind_experiment("other")


def test_cli_run_status_export_report(toy_spec, tmp_path, cli):
    store = tmp_path / "c.db"
    code, out, err = cli("run", toy_spec, "--executor", "serial", "--store", store)
    assert code == 0 and "20 computed ok" in out
    assert "toy.toml: 20/20 cells done, 0 failed" in err  # plain progress lines when not on a terminal
    code, out, _ = cli("status", store)
    assert code == 0 and "20 ok, 0 failed" in out
    for fmt in ("csv", "json", "parquet"):
        code, out, _ = cli("export", store, "--format", fmt, "-o", tmp_path / f"t.{fmt}")
        assert code == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == 20 and {"key", "status", "mu", "sigma", "mean", "var"} <= set(rows[0])
    import csv

    with open(tmp_path / "t.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [float(r["mean"]) for r in csv_rows] == [r["mean"] for r in rows]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "t.parquet").column("mean").to_pylist() == [r["mean"] for r in rows]
    code, out, _ = cli("report", store, "-o", tmp_path / "rep" / "report.html")
    assert code == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "toy_means" in html and "Provenance" in html and 'experiment = "toy"' in html
    assert (tmp_path / "rep" / "figures" / "toy_means.svg").exists()


def test_run_exit_code_is_1_when_cells_failed(tmp_path, cli):
    spec = write_spec(tmp_path, 'experiment = "toy"\n[grid]\nfail = ["none", "raise"]\n')
    code, out, err = cli("run", spec, "--executor", "serial", "--store", tmp_path / "e.db")
    assert code == 1
    assert "1 failed" in out and "--retry-failed" in err
