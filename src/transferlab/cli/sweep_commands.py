"""Commands of the sweep engine: run, status, export, report, experiments."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from transferlab.cli.app import app

#: Most cells of a sweep that ``run`` computes serially when neither the command line nor the spec
#: names an executor (a process pool starts in about a second per worker, each importing torch).
TINY_SWEEP_CELLS = 4


class _Progress:
    """Progress on the driver: a rich bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._last = 0.0

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
            self._bar.__enter__()
        return self

    def __call__(self, event) -> None:  # event: transferlab.sweep.ProgressEvent
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=event.total, failed=0)
            self._bar.update(self._task, completed=event.done, failed=event.failed)
            return
        now = time.monotonic()
        if event.done in (0, event.total) or now - self._last >= 5.0:
            self._last = now
            rate = event.done / event.elapsed if event.elapsed > 0 else 0.0
            eta = f", ETA {(event.total - event.done) / rate:.0f} s" if rate > 0 and event.done < event.total else ""
            print(f"{self.label}: {event.done}/{event.total} cells done, {event.failed} failed{eta}",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@app.command("run")
def run_command(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="TOML spec file."),
    executor: Optional[str] = typer.Option(
        None, help="serial | process | ray (default: the spec's, else serial for at most 4 cells unless --jobs "
                   "is given, else process)."),
    jobs: Optional[int] = typer.Option(None, min=1, help="Worker processes / Ray CPUs (default: CPU count)."),
    store: Optional[Path] = typer.Option(None, help="Store file (default: the spec's, else <spec stem>.db)."),
    set_: list[str] = typer.Option([], "--set", help="Override a spec value: --set params.d=200 (repeatable)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Most cells per batch."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local instance)."),
    threads: int = typer.Option(1, min=1, help="torch/BLAS threads per worker (with the serial executor: this "
                                               "process, unless OMP_NUM_THREADS is set)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Recompute cells stored as failed."),
    force: bool = typer.Option(False, "--force", help="Recompute every cell."),
    max_cells: Optional[int] = typer.Option(
        None, min=1, help="Refuse a spec of more cells (default: the spec's [run] max_cells)."),
    device: Optional[str] = typer.Option(
        None, help="Where simulations run: cpu | cuda | cuda:k (sets params.device; kinds with a device "
                   "parameter, e.g. fate). A device this machine lacks is an error."),
) -> int:
    """Run a sweep; cells already in the store are skipped (resume and cache).

    Without --executor or --jobs and without a [run] executor or jobs in the spec, a sweep of at most
    TINY_SWEEP_CELLS (4) cells runs serially: a worker pool's start-up (each worker imports
    torch) costs more than so few cells usually gain."""
    from transferlab.sweep import load_spec, run_sweep

    limit = [] if max_cells is None else [f"run.max_cells={max_cells}"]
    placed = [] if device is None else [f"params.device={device}"]
    spec = load_spec(spec_path, overrides=[*set_, *limit, *placed])
    # a worker count (flag or [run] jobs) asks for a pool as much as an executor does
    named = executor is not None or jobs is not None or bool({"executor", "jobs"} & spec.run.model_fields_set)
    if not named and spec.cell_count() <= TINY_SWEEP_CELLS:
        executor = "serial"
    serial = (executor or spec.run.executor) == "serial"
    with _limited_threads(threads) if serial else contextlib.nullcontext(), _Progress(spec.label) as progress:
        summary = run_sweep(spec, store, executor=executor, jobs=jobs, batch_size=batch_size,
                            retry_failed=retry_failed, force=force, address=address, threads_per_worker=threads,
                            progress=progress)
    print(summary.line())
    if summary.failed_in_store:
        print(f"{summary.failed_in_store} cells of this spec are failed in the store; "
              f"see `transferlab status {summary.store}`; rerun with --retry-failed", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _limited_threads(threads: int) -> Iterator[None]:
    """Run this process's torch and BLAS on ``threads`` threads, as a worker of the process executor
    does, and restore them afterwards: on a shared machine, multithreaded small tensor operations spin
    on busy cores (seen once on 2 loaded cores: a 3-cell fate sweep was several times slower on two
    threads than on one; not a benchmark). An ``OMP_NUM_THREADS`` the user set wins; torch reads the variables when it
    is imported (here, usually later, by the experiment kind)."""
    import os

    from transferlab.sweep.executors import thread_environment

    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    torch = sys.modules.get("torch")
    torch_threads = None if torch is None else torch.get_num_threads()
    with thread_environment(threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(torch_threads)


@app.command("status")
def status_command(store: Path = typer.Argument(..., metavar="STORE", help="Store file.")) -> None:
    """Cell counts (ok, not converged, failed, running, left by interrupted runs), runs, and failed
    cells of a store. A run whose driver is gone (killed) shows as interrupted with the cells it
    committed; an ok cell whose result says ``converged`` false counts as not converged."""
    from rich.console import Console
    from rich.table import Table

    from transferlab.sweep import open_store

    console = Console()
    with open_store(store) as st:
        counts = st.counts()
        unfinished = st.unfinished()
        unconverged = st.unconverged()
        runs = st.runs()
        failed = st.cells("failed")
        ok = f"{counts['ok']} ok" + (f" ({unconverged} did not converge)" if unconverged else "")
        left = f", {unfinished['interrupted']} left unfinished by interrupted runs" if unfinished["interrupted"] else ""
        console.print(f"{store}: experiment {st.experiment()!r}: {ok}, {counts['failed']} failed, "
                      f"{unfinished['running']} running{left}; {st.total_seconds():.1f} s of compute", markup=False,
                      soft_wrap=True)
    table = Table("run", "status", "executor", "host", "cells", "ok", "failed", "wall s", title="runs")
    for r in runs:
        wall = f"{r['finished'] - r['started']:.1f}" if r["finished"] else ""
        table.add_row(str(r["run_id"]), r["state"], str(r["executor"]), str(r["host"]), str(r["cells_total"]),
                      str(r["cells_ok"] or 0), str(r["cells_failed"] or 0), wall)
    console.print(table)
    for r in runs:
        if r["state"] == "interrupted" and r["status"] == "running":
            console.print(f"run {r['run_id']} was killed (its driver, pid {r['pid']} on {r['host']}, is gone) after "
                          f"committing {(r['cells_ok'] or 0) + (r['cells_failed'] or 0)} cells; run the spec "
                          "again to resume", markup=False, soft_wrap=True)
    for cell in failed[:20]:
        console.print(f"failed {cell.key[:12]} {cell.config}: {cell.error}", markup=False)
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failed cells (transferlab export for all)")


@app.command("export")
def export_command(
    store: Path = typer.Argument(..., metavar="STORE", help="Store file."),
    format: str = typer.Option("csv", "--format", "-f", help="csv | parquet | json"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: STORE stem + ext)."),
) -> None:
    """Write every cell (config, result, status, error) as one flat table."""
    from transferlab.sweep import export_store

    out = export_store(store, format, output or store.with_suffix(f".{format}"))
    print(out)


@app.command("report")
def report_command(
    store: Path = typer.Argument(..., metavar="STORE", help="Store file."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    figures: Optional[Path] = typer.Option(None, help="Directory for PNG+SVG figures (default: beside the HTML)."),
) -> None:
    """Write the self-contained HTML report of a store (figures also as PNG and SVG)."""
    from transferlab.report import write_store_report

    print(write_store_report(store, output, figures))


@app.command("experiments")
def experiments_command() -> None:
    """List the registered experiment kinds and their parameters."""
    from rich.console import Console
    from rich.table import Table

    from transferlab.experiments import available_experiments, get_experiment

    console = Console()
    for name in available_experiments():
        kind = get_experiment(name)
        table = Table(title=f"{name} (version {kind.version}): {kind.description}", title_justify="left")
        table.add_column("parameter")
        table.add_column("type")
        table.add_column("default")
        for pname, ptype, default in kind.parameters():
            table.add_row(pname, ptype, default)
        console.print(table)
