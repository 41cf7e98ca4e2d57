"""The real-data analogue of incremental defrosting (the ``transfer`` kind on correlated image tasks): class
subsets of a data set as tasks, the k*(n) figure, distinct figure names, and the packaged specs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transferlab.cli import reproduce
from transferlab.errors import ConfigError
from transferlab.experiments.base import Cell, ResultTable
from transferlab.experiments.transfer import TransferConfig, TransferExperiment
from transferlab.sweep import expand_cells, load_spec
from transferlab.tasks import load_dataset, split_dataset_name
from transferlab.tasks.images import FASHION_HIERARCHY

# ---------------------------------------------------------------------------------------------- class subsets


def test_a_class_subset_keeps_those_images_relabelled_in_the_listed_order() -> None:
    base = load_dataset("fashion_mnist")
    sub = load_dataset("fashion_mnist[9, 5]")  # ankle boot, sandal
    assert sub is load_dataset("fashion_mnist[9,5]")  # one cache entry however it is spaced
    assert sub.name == "fashion_mnist[9,5]" and sub.classes == ("ankle boot", "sandal")
    for split in ("train", "test"):
        x, y = getattr(base, f"x_{split}"), getattr(base, f"y_{split}")
        keep = np.isin(y, [9, 5])
        # same images, original order: pixels within 1e-6, far below one 8-bit grey level (1/255 after scaling)
        np.testing.assert_allclose(getattr(sub, f"x_{split}"), x[keep], rtol=0, atol=1e-6)
        labels = getattr(sub, f"y_{split}")
        assert np.issubdtype(labels.dtype, np.integer)  # class labels: integers, compared exactly
        assert labels.tolist() == np.where(y[keep] == 9, 0, 1).tolist()
        assert not getattr(sub, f"x_{split}").flags.writeable
    assert sub.y_train.size == 12000 and sub.y_test.size == 2000  # 6000 / 1000 per Fashion-MNIST class
    # both are footwear: the hierarchy keeps that one coarse class
    assert sub.hierarchy.coarse_classes == ("footwear",) and sub.hierarchy.fine_to_coarse.tolist() == [0, 0]


def test_coarse_labels_of_a_subset_follow_the_base_hierarchy() -> None:
    sub = load_dataset("fashion_mnist[5,6,7,8,9]")  # sandal, shirt, sneaker, bag, ankle boot
    coarse = sub.coarse()
    assert coarse.classes == ("tops", "footwear", "bags")
    names = FASHION_HIERARCHY.coarse_classes
    expected = [coarse.classes.index(names[FASHION_HIERARCHY.fine_to_coarse[c]]) for c in (5, 6, 7, 8, 9)]
    assert np.issubdtype(coarse.y_test.dtype, np.integer)  # class labels: integers, compared exactly
    assert coarse.y_test.tolist() == np.asarray(expected)[sub.y_test].tolist()
    assert np.bincount(coarse.y_train).tolist() == [6000, 18000, 6000]


@pytest.mark.parametrize(
    ("name", "message"),
    [("fashion_mnist[5]", "at least 2 distinct"), ("fashion_mnist[5,5]", "at least 2 distinct"),
     ("fashion_mnist[5,x]", "comma-separated labels"), ("fashion_mnist[5,6", "is written <name>"),
     ("shoes[1,2]", "data set must be one of"), ("fashion_mnist[3,10]", r"class must be an integer in 0\.\.9")],
)
def test_bad_class_subsets_are_one_clear_error(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset(name)


def test_split_dataset_name() -> None:
    assert split_dataset_name("mnist") == ("mnist", None)
    assert split_dataset_name("animal_mnist[0, 3,2]") == ("animal_mnist", (0, 3, 2))


def test_a_bad_subset_in_a_spec_is_refused_by_the_cli_before_training(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(textwrap.dedent("""
        experiment = "transfer"
        [params]
        source = "trained:fashion_mnist[0,1,2,3,4]"
        protocol = "scratch"
        n = 20
        [grid]
        target = ["fashion_mnist[5,6,7,8,9]", "fashion_mnist[5,5]"]
        """), encoding="utf-8")
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(tmp_path / "s.db")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "target: data set 'fashion_mnist[5,5]'" in lines[0]
    assert not (tmp_path / "cache").exists()  # nothing was trained


# ---------------------------------------------------------------------------------------------- end to end


def test_a_near_source_of_other_classes_runs_through_every_depth(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A CNN trained on Fashion-MNIST classes 0-4 (5-way head) transferred to classes 5-9 at every k."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    exp = TransferExperiment()
    common = {"source": "trained:fashion_mnist[0,1,2,3,4]", "target": "fashion_mnist[5,6,7,8,9]", "n": 10,
              "instances": 2, "source_size": 200, "source_epochs": 1, "val_size": 10, "test_size": 100,
              "max_steps": 4, "patience_steps": 2}
    rows = []
    for i, (protocol, k) in enumerate([("freeze", 0), ("freeze", 1), ("freeze", 2), ("freeze", 3), ("scratch", None)]):
        cell = Cell(key=f"{i:064x}", config=TransferConfig(protocol=protocol, k=k, **common))
        row = exp.run_batch([cell])[0]
        assert row["n_blocks"] == 3 and 0 <= row["test_error"] <= 1 and len(row["test_error_instances"]) == 2
        rows.append({**cell.config.model_dump(), **row, "replicate": 0, "key": cell.key})
    (meta,) = (tmp_path / "cache" / "sources").glob("*.json")
    assert '"n_classes": 5' in meta.read_text()  # the source never saw the target's classes
    (pair,) = exp.analyze(ResultTable(rows=rows)).data["pairs"]
    assert pair["label"] == "CNN trained on fashion_mnist[0,1,2,3,4] -> fashion_mnist[5,6,7,8,9]"
    kept = {r["k"]: np.mean(r["test_error_instances"]) for r in rows if r["protocol"] == "freeze"}
    assert pair["best"][0]["k_star"] == min(kept, key=kept.get)


# ---------------------------------------------------------------------------------------------- k*(n) figure


def _row(source: str, n: int, protocol: str, k: int, errors: list[float]) -> dict:
    cfg = TransferConfig(source=source, target="fashion_mnist[5,6,7,8,9]", n=n, protocol=protocol,
                         k=k if protocol == "freeze" else None, instances=len(errors))
    return {**cfg.model_dump(), "k": k, "n_blocks": 3, "test_error": float(np.mean(errors)),
            "test_error_instances": errors, "test_loss": 0.0, "converged": True, "unconverged": 0,
            "stop_epoch_instances": [], "replicate": 0}


def test_k_star_figure_and_distinct_figure_names_for_long_labels() -> None:
    # two sources whose labels agree on their first 60 characters, so their slugs would collide
    long_a = "trained:mnist_fashion_animal[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,20]"
    long_b = "trained:mnist_fashion_animal[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,21]"
    k_stars = {(long_a, 50): 2, (long_a, 500): 0, (long_b, 50): 3, (long_b, 500): 1}
    rows = []
    for (source, n), k_star in k_stars.items():
        for k in range(4):
            rows.append(_row(source, n, "freeze", k, [0.2 + 0.05 * abs(k - k_star) + d for d in (0.0, 0.01)]))
        rows.append(_row(source, n, "scratch", 0, [0.4, 0.41]))
    exp = TransferExperiment()
    results = exp.analyze(ResultTable(rows=rows))
    figures = exp.figures(results)
    curves = [name for name in figures if name.startswith("transfer_error_vs_k_")]
    assert len(curves) == 2  # one per pair, not one overwriting the other
    assert set(exp.figure_captions(results)) == set(figures) and "transfer_k_star" in figures
    ax = figures["transfer_k_star"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for pair in results.data["pairs"]:
        source = pair["pair"]["source"]
        x, y = lines[pair["label"]].get_data()
        assert list(x) == [50, 500]
        # drawn at k* plus one small per-pair offset (|offset| <= 0.12, so the integer is recovered)
        assert [round(v) for v in y] == [k_stars[(source, 50)], k_stars[(source, 500)]]
        assert all(abs(v - round(v)) <= 0.12 + 1e-12 for v in y)


# ---------------------------------------------------------------------------------------------- the specs


def test_the_packaged_real_specs_validate_into_their_own_store(tmp_path: Path) -> None:
    counts = {}
    for mode in ("quick", "full"):
        real = [run for run in reproduce.SPECS["defrost"][mode] if run.filename.startswith("defrost_real_")]
        assert real and all(run.store == "_real" for run in real)
        others = [run for run in reproduce.SPECS["defrost"][mode] if run not in real]
        assert all(run.store == "" for run in others)  # the defrost kind's store
        for run in real:
            path = tmp_path / run.out_name
            path.write_text(run.text(), encoding="utf-8")
            spec = load_spec(path)
            assert spec.experiment == "transfer"
            counts[run.out_name] = len(expand_cells(spec))
    # quick: 2 sources x 2 n x 4 k, then scratch and the probe; full: 2 sources x 2 targets x 4 n x 4 k, the
    # two baselines, then the coarse-label source over the same targets
    assert counts == {"defrost_real_quick.toml": 16, "defrost_real_quick-baselines.toml": 8,
                      "defrost_real_full.toml": 64, "defrost_real_full-baselines.toml": 32,
                      "defrost_real_full-coarse.toml": 32, "defrost_real_full-coarse-baselines.toml": 16}


def test_an_exact_tie_goes_to_the_smallest_k_in_k_star_and_the_best_protocol() -> None:
    """Errors are multiples of 1 / (test images), so equal means happen; k* and the best transfer agree on them."""
    source = "trained:mnist"
    rows = [_row(source, 50, "freeze", k, errors) for k, errors in
            ((0, [0.3, 0.2]), (1, [0.2, 0.3]), (2, [0.4, 0.4]), (3, [0.5, 0.5]))]
    rows.append(_row(source, 50, "scratch", 0, [0.6, 0.6]))
    (pair,) = TransferExperiment().analyze(ResultTable(rows=list(reversed(rows)))).data["pairs"]
    (best,) = pair["best"]
    assert best["k_star"] == 0 and best["best_protocol"] == "freeze k=0"
    assert best["transferability"] == pytest.approx(0.6 - 0.25, abs=1e-12)
