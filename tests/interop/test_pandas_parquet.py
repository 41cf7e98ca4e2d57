"""Working with pandas and Parquet: round trips of the result and scaling tables, a DataFrame as
the input of analyze_transfer, load_table on a store path, list columns in Parquet exports."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transferlab.errors import ConfigError, DataError, StoreError
from transferlab.experiments import Experiment, ExperimentConfig, Results, ResultTable, register
from transferlab.scaling import (
    EffectiveDataTable,
    LossTable,
    SyntheticSurface,
    analyze_transfer,
    measure_effective_data,
    read_losses_csv,
    synthetic_losses,
)
from transferlab.sweep import export_store, load_table, open_store, run_sweep, spec_from_dict

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "synthetic_transfer_losses.csv"


class ListsConfig(ExperimentConfig):
    mu: float = 0.0
    instances: int = 3


@register
class ListsKind(Experiment):
    """Rows with a per-instance list and a per-instance matrix, like the fate kind's ``*_instances``."""

    name, version, Config = "interop-lists", "1", ListsConfig

    def run_batch(self, cells):
        rows = []
        for cell in cells:
            x = cell.rng().normal(cell.config.mu, 1.0, size=(cell.config.instances, 2))
            rows.append({"mean": float(x.mean()), "risk_instances": x[:, 0].tolist(), "weights": x.tolist()})
        return rows

    def analyze(self, table):
        return Results()


@pytest.fixture
def lists_store(tmp_path: Path) -> Path:
    store = tmp_path / "lists.db"
    spec = spec_from_dict({"experiment": "interop-lists", "grid": {"mu": [0.0, 1.0, 2.0]}})
    assert run_sweep(spec, store, executor="serial").ok == 3
    return store


# -- ResultTable <-> pandas ------------------------------------------------------------------------


def test_result_table_round_trips_through_pandas():
    table = ResultTable(
        rows=[
            {"theta": 0.5, "replicate": 0, "key": "a", "risk": 0.25, "risk_instances": [0.2, 0.3]},
            {"theta": 1.0, "replicate": 1, "key": "b", "risk": 0.5, "risk_instances": [0.4, 0.6], "note": "x"},
        ],
        failed=[{"key": "c", "config": {"theta": 2.0}, "error": "RuntimeError: boom"}],
        params={"d": 40},
    )
    frame = table.to_pandas()
    assert frame.shape == (2, 6)
    assert list(frame.columns) == ["theta", "replicate", "key", "risk", "risk_instances", "note"]
    assert frame["risk_instances"].tolist() == [[0.2, 0.3], [0.4, 0.6]]  # lists, not JSON text
    assert pd.isna(frame.loc[0, "note"])  # a field missing from a row is missing there
    # a lossless round trip: no arithmetic happens, so equality is exact
    assert ResultTable.from_pandas(frame) == table
    assert ResultTable.from_pandas(frame, params={}).params == {}


def test_result_table_from_a_users_frame_has_python_values():
    frame = pd.DataFrame({"x": np.array([1.5, 2.5]), "n": np.array([3, 4]), "v": [np.array([1.0]), np.array([2.0])]})
    table = ResultTable.from_pandas(frame)
    assert table.rows == [{"x": 1.5, "n": 3, "v": [1.0]}, {"x": 2.5, "n": 4, "v": [2.0]}]
    assert all(type(row["n"]) is int and type(row["v"]) is list for row in table.rows)
    assert table.failed == [] and table.params == {}


def test_missing_pandas_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    with pytest.raises(ConfigError, match=r"ResultTable.to_pandas needs pandas: pip install pandas"):
        ResultTable(rows=[{"a": 1.0}]).to_pandas()
    with pytest.raises(ConfigError, match=r"transferlab\[pandas\]"):
        synthetic_losses(SyntheticSurface(model_sizes=(1e6, 1e7))).to_pandas()


# -- load_table on a path, Parquet list columns ----------------------------------------------------


def test_load_table_accepts_a_store_path(lists_store, tmp_path):
    kind, table = load_table(lists_store)
    with open_store(lists_store) as store:
        _, same = load_table(store)
    assert kind.name == "interop-lists" and table == same and len(table) == 3
    frame = table.to_pandas()
    assert {"mu", "replicate", "key", "mean", "risk_instances", "weights"} <= set(frame.columns)
    assert all(len(v) == 3 for v in frame["risk_instances"])
    assert load_table(str(lists_store))[1] == table
    with pytest.raises(StoreError, match="no such store"):
        load_table(tmp_path / "missing.db")


def test_parquet_export_keeps_per_instance_arrays_as_list_columns(lists_store, tmp_path):
    out = export_store(lists_store, "parquet", tmp_path / "t.parquet")
    read = pq.read_table(out)
    assert pa.types.is_list(read.schema.field("risk_instances").type)
    assert pa.types.is_floating(read.schema.field("risk_instances").type.value_type)
    weights = read.schema.field("weights").type
    assert pa.types.is_list(weights) and pa.types.is_list(weights.value_type)  # (instances, 2) nested
    with open_store(lists_store) as store:
        stored = {c.key: c.result for c in store.cells()}
    for key, risks, matrix in zip(*(read.column(c).to_pylist() for c in ("key", "risk_instances", "weights"))):
        np.testing.assert_allclose(risks, stored[key]["risk_instances"], rtol=0, atol=0)
        np.testing.assert_allclose(matrix, stored[key]["weights"], rtol=0, atol=0)
    # CSV has no list type: there the arrays stay JSON text
    csv_out = export_store(lists_store, "csv", tmp_path / "t.csv")
    assert pd.read_csv(csv_out)["risk_instances"].str.startswith("[").all()


# -- scaling tables <-> pandas ---------------------------------------------------------------------


def test_loss_table_round_trips_through_pandas():
    table = read_losses_csv(EXAMPLE_CSV)
    frame = table.to_pandas()
    assert list(frame.columns) == ["model_size", "data_size", "regime", "loss"] and len(frame) == len(table)
    back = LossTable.from_pandas(frame)
    for name in ("model_size", "data_size", "loss"):
        np.testing.assert_allclose(getattr(back, name), getattr(table, name), rtol=1e-15)
    assert back.regime.tolist() == table.regime.tolist()


def test_effective_data_table_round_trips_through_pandas():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effective = measure_effective_data(synthetic_losses(SyntheticSurface(noise=0.0)), low_data_fraction=0.2)
    frame = effective.to_pandas()
    assert frame.shape == (effective.model_size.size, 7)
    assert frame.attrs["low_data_fraction"] == pytest.approx(0.2)
    back = EffectiveDataTable.from_pandas(frame)
    for name in ("model_size", "data_size", "loss", "effective_data", "transferred_data", "data_for_plateau"):
        np.testing.assert_allclose(getattr(back, name), getattr(effective, name), rtol=1e-15)
    assert back.status.tolist() == effective.status.tolist() and back.counts() == effective.counts()
    assert back.low_data_fraction == pytest.approx(0.2) and back.curves == {}
    with pytest.raises(DataError, match="unknown value"):
        EffectiveDataTable.from_pandas(frame.assign(status="maybe"))


def test_analyze_transfer_on_a_dataframe_equals_the_csv():
    from_csv = analyze_transfer(read_losses_csv(EXAMPLE_CSV), n_boot=20, seed=3)
    frame = pd.read_csv(EXAMPLE_CSV)
    from_frame = analyze_transfer(frame.assign(extra=1.0), n_boot=20, seed=3)  # extra columns are ignored
    for name in ("k", "alpha", "beta"):
        assert getattr(from_frame.fit, name) == pytest.approx(getattr(from_csv.fit, name), rel=1e-12)
    for name, (lo, hi) in from_csv.fit.intervals.items():
        assert from_frame.fit.intervals[name] == pytest.approx((lo, hi), rel=1e-12)
    assert from_frame.effective.counts() == from_csv.effective.counts()
    assert isinstance(from_frame.table, LossTable)


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="loss"), r"missing column\(s\) 'loss'"),
    (lambda f: f.assign(loss="high"), r"column 'loss' must hold numbers"),
    (lambda f: f.assign(regime="pretrain"), r"column 'regime' must be 'scratch' or 'finetune': row 0"),
    (lambda f: f.assign(data_size=-1.0), r"column 'data_size' must be finite and > 0: row 0"),
])
def test_bad_dataframes_are_data_errors(change, message):
    frame = pd.read_csv(EXAMPLE_CSV)
    with pytest.raises(DataError, match=message):
        analyze_transfer(change(frame), n_boot=0)


def test_dataframe_regimes_are_matched_like_the_csv():
    frame = pd.read_csv(EXAMPLE_CSV)
    table = LossTable.from_pandas(frame.assign(regime=" " + frame["regime"].str.upper()))
    assert table.regime.tolist() == frame["regime"].tolist()
