"""The sweep engine: specs -> cells -> batches -> executors -> the SQLite store.

The engine knows no paper. The report of a store is made by
:func:`transferlab.report.write_store_report` (the report layer sits above this one).
"""

from transferlab.sweep.driver import ProgressEvent, RunSummary, run_sweep
from transferlab.sweep.executors import EXECUTORS, BatchResult, execute_batch, make_executor
from transferlab.sweep.planner import iter_batches
from transferlab.sweep.spec import PlannedCell, RunOptions, Spec, cell_key, expand_cells, load_spec, spec_from_dict
from transferlab.sweep.store import Store, StoredCell, open_store
from transferlab.sweep.table import EXPORT_FORMATS, export_store, load_table

__all__ = [
    "EXECUTORS",
    "EXPORT_FORMATS",
    "BatchResult",
    "PlannedCell",
    "ProgressEvent",
    "RunOptions",
    "RunSummary",
    "Spec",
    "Store",
    "StoredCell",
    "cell_key",
    "execute_batch",
    "expand_cells",
    "export_store",
    "iter_batches",
    "load_spec",
    "load_table",
    "make_executor",
    "open_store",
    "run_sweep",
    "spec_from_dict",
]
