"""Real label hierarchies through the ``transfer`` kind (paper 4's real-data part): the label-function grammar,
k-means (against scikit-learn), aligned clusterings, random labels, the hard-sample definition, the easy / hard
row fields, and a tiny spec end to end through the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transferlab.errors import ConfigError
from transferlab.experiments.transfer import TransferConfig, _source_fields, hard_mask
from transferlab.experiments.transfer_labels import label_curves
from transferlab.tasks import load_dataset
from transferlab.tasks.images import DOMAIN_HIERARCHY, FASHION_HIERARCHY, static_hierarchy
from transferlab.measures._gmm import kmeans
from transferlab.tasks.relabel import aligned_cluster_counts, parse_label_function, pca, relabel

# ---------------------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(("text", "dataset", "message"), [
    ("kmeans", None, "is not one of"), ("random:x", None, "is not one of"), ("random:1", None, "at least 2"),
    ("kmeans:5:halves", None, "only kmeans-aligned"), ("fine:halves", None, "is not one of"),
    ("coarse", "mnist", "has none"), ("kmeans-aligned:4", "fashion_mnist", "K >= the 5 coarse classes"),
    ("coarse:halves", "fashion_mnist", "no grouping 'halves'"),
    ("kmeans-aligned:6:halves", "mnist_fashion_animal[0,1]", "class subsets have no named groupings"),
])
def test_bad_label_functions_are_refused_with_one_message(text: str, dataset: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_label_function(text, dataset)


def test_good_label_functions_parse_and_count_their_classes() -> None:
    assert parse_label_function("kmeans-aligned:12:halves", "mnist_fashion_animal").k == 12
    halves = static_hierarchy("mnist_fashion_animal", "halves")
    fn = parse_label_function("coarse:halves", "mnist_fashion_animal")
    assert fn.n_classes(30, halves) == 6 and parse_label_function("fine").n_classes(30, halves) == 30
    # the halves nest in the domains: every group's fine classes share one domain
    for g in range(halves.n_coarse):
        assert len({int(DOMAIN_HIERARCHY.fine_to_coarse[f]) for f in halves.members(g)}) == 1
    # the static hierarchy of a subset is the loaded one's (select_classes)
    sub = load_dataset("fashion_mnist[5,6,7,8,9]")
    assert static_hierarchy("fashion_mnist[5,6,7,8,9]").fine_to_coarse.tolist() == sub.hierarchy.fine_to_coarse.tolist()


def test_the_source_cache_key_includes_the_label_function() -> None:
    base = {"source": "trained:fashion_mnist", "n": 10, "protocol": "finetune"}
    keys = {str(_source_fields(TransferConfig(**base, source_labels=s)))
            for s in ("fine", "coarse", "kmeans:20", "kmeans-aligned:20", "random:20")}
    assert len(keys) == 5


# ---------------------------------------------------------------------------------------------- k-means and PCA


def _blobs(rng: np.random.Generator, n: int = 600, q: int = 4, k: int = 6) -> np.ndarray:
    centres = rng.normal(0, 4, size=(k, q))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, q))


def test_kmeans_agrees_with_scikit_learn_from_the_same_init() -> None:
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(1)
    x = _blobs(rng)
    for k in (3, 6, 10):
        init = x[rng.choice(len(x), k, replace=False)]
        ours = kmeans(x, k, rng, init=init)
        theirs = sklearn_cluster.KMeans(n_clusters=k, init=init, n_init=1, algorithm="lloyd", tol=0.0,
                                        max_iter=300).fit(x)
        assert ours.converged
        # the same Lloyd iterations in float64: inertia to 1e-9 relative (rounding only), same partition
        assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-9)
        assert np.array_equal(ours.labels, theirs.labels_)
        # the inertia is the definition's sum of squared distances to the assigned centroids (1e-9 relative)
        direct = sum(((x[ours.labels == c] - x[ours.labels == c].mean(0)) ** 2).sum() for c in range(k))
        assert ours.inertia == pytest.approx(direct, rel=1e-9)


def test_kmeans_plus_plus_is_seeded() -> None:
    x = _blobs(np.random.default_rng(2))
    a = kmeans(x, 6, np.random.default_rng(5))
    b = kmeans(x, 6, np.random.default_rng(5))
    assert np.array_equal(a.labels, b.labels) and a.inertia == b.inertia  # same seed: bit-identical


def test_pca_components_match_scikit_learn_up_to_sign() -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = np.random.default_rng(3).normal(size=(300, 12)) @ np.diag(np.linspace(3, 0.2, 12))
    mean, comps = pca(x, 5)
    ref = decomposition.PCA(n_components=5, svd_solver="full").fit(x)
    np.testing.assert_allclose(mean, ref.mean_, rtol=0, atol=1e-12)  # float64 means of O(1) data
    # distinct eigenvalues (spread 3 .. 0.2): each component equals the reference's up to sign, to 1e-8
    np.testing.assert_allclose(np.abs((comps * ref.components_.T).sum(0)), 1.0, rtol=0, atol=1e-8)


# ---------------------------------------------------------------------------------------------- label functions


@pytest.fixture(scope="module")
def fashion_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = load_dataset("fashion_mnist")
    return data.x_train[:1500], data.y_train[:1500], data.x_test[:500], data.y_test[:500]


def test_aligned_clusters_nest_in_the_groups(fashion_sample) -> None:
    x, y, x_test, y_test = fashion_sample
    fn = parse_label_function("kmeans-aligned:17", "fashion_mnist")
    labels, (test_labels,) = relabel(fn, x, y, FASHION_HIERARCHY, np.random.default_rng(0), others=((x_test, y_test),))
    assert sorted(np.unique(labels).tolist()) == list(range(17))
    for split_labels, split_y in ((labels, y), (test_labels, y_test)):
        groups = FASHION_HIERARCHY.coarsen(split_y)
        for c in np.unique(split_labels):
            assert np.unique(groups[split_labels == c]).size == 1  # every cluster lies in one group
    # with K = the number of groups, aligned k-means is exactly the coarse labelling
    five, _ = relabel(parse_label_function("kmeans-aligned:5"), x, y, FASHION_HIERARCHY, np.random.default_rng(0))
    assert five.tolist() == FASHION_HIERARCHY.coarsen(y).tolist()
    # global k-means ignores the hierarchy: some cluster mixes groups
    glob, _ = relabel(parse_label_function("kmeans:17"), x, y, FASHION_HIERARCHY, np.random.default_rng(0))
    groups = FASHION_HIERARCHY.coarsen(y)
    assert max(np.unique(groups[glob == c]).size for c in range(17)) > 1


def test_aligned_cluster_counts_follow_group_sizes() -> None:
    sizes = np.array([24000, 6000, 18000, 6000, 6000])  # Fashion-MNIST's groups
    assert aligned_cluster_counts(sizes, 10).tolist() == [4, 1, 3, 1, 1]
    assert aligned_cluster_counts(sizes, 5).tolist() == [1, 1, 1, 1, 1]
    for k in (6, 20, 50, 100):
        counts = aligned_cluster_counts(sizes, k)
        assert counts.sum() == k and counts.min() >= 1
    with pytest.raises(ConfigError, match="below the 5 coarse classes"):
        aligned_cluster_counts(sizes, 4)


def test_random_labels_are_balanced_seeded_and_ignore_the_images(fashion_sample) -> None:
    x, y, x_test, y_test = fashion_sample
    fn = parse_label_function("random:7")
    a, (a_test,) = relabel(fn, x, y, None, np.random.default_rng(4), others=((x_test, y_test),))
    b, _ = relabel(fn, x, y, None, np.random.default_rng(4), others=((x_test, y_test),))
    c, _ = relabel(fn, x, y, None, np.random.default_rng(5), others=((x_test, y_test),))
    for labels in (a, a_test):
        counts = np.bincount(labels, minlength=7)
        assert counts.max() - counts.min() <= 1  # balanced: sizes differ by at most one
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # independent of the true class: the contingency table with the 10 classes is near uniform. Each cell
    # has expectation 1500 / 70 = 21.4 and SD ~4.5; 6 SD bounds it so that a label copy would fail loudly
    table = np.zeros((10, 7))
    np.add.at(table, (y, a), 1)
    assert np.abs(table - table.sum(1, keepdims=True) / 7).max() < 6 * 4.7


# ---------------------------------------------------------------------------------------------- hard samples


def test_hard_samples_are_the_lowest_margins_within_each_class() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(3, size=203)
    margins = rng.normal(size=203)
    hard = hard_mask(margins, labels, 0.2)
    for c in range(3):
        members = labels == c
        assert hard[members].sum() == int(np.ceil(0.2 * members.sum()))  # the class proportions are kept
        assert margins[members & hard].max() <= margins[members & ~hard].min()
    assert not hard_mask(margins, labels, 0.0).any()


# ---------------------------------------------------------------------------------------------- CLI and end to end


def _run(tmp_path: Path, spec_text: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent(spec_text), encoding="utf-8")
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "transferlab.cli", "run", str(spec), "--store", str(tmp_path / "s.db"),
               "--executor", "serial"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)  # generous: shared machines


@pytest.mark.parametrize(("labels", "message"), [
    ("kmeans-aligned:3", "aligned k-means needs K >= the 5 coarse classes"),
    ("clusters:5", "is not one of fine, coarse"),
])
def test_a_bad_label_function_in_a_spec_is_refused_by_the_cli(tmp_path: Path, labels: str, message: str) -> None:
    proc = _run(tmp_path, f"""
        experiment = "transfer"
        [params]
        source = "trained:fashion_mnist"
        protocol = "linear_probe"
        n = 20
        [grid]
        source_labels = ["fine", "{labels}"]
        """)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "cache").exists()  # refused before anything trained


def test_a_tiny_label_function_sweep_runs_end_to_end(tmp_path: Path) -> None:
    """digits (8 x 8, no hierarchy): an MLP pretrained with fine, global k-means and random labels, probed on
    the digits with hard samples; the rows carry easy and hard errors that recombine to the test error."""
    proc = _run(tmp_path, """
        experiment = "transfer"
        [params]
        source = "trained:digits"
        target = "digits"
        architecture = "mlp"
        source_size = 300
        source_epochs = 1
        n = 30
        instances = 2
        val_size = 20
        test_size = 200
        hard_fraction = 0.25
        protocol = "linear_probe"
        [grid]
        source_labels = ["fine", "kmeans:4", "random:4"]
        """)
    assert proc.returncode == 0, proc.stderr
    from transferlab.report.store_report import load_table, open_store

    with open_store(tmp_path / "s.db") as store:
        _, table = load_table(store)
    assert len(table.rows) == 3
    for row in table.rows:
        hard = row["hard_samples"]
        assert hard == 50  # ceil(0.25 * 20) in each of the 10 classes of the 200 balanced test images
        for total, easy, hard_err in zip(row["test_error_instances"], row["easy_error_instances"],
                                         row["hard_error_instances"], strict=True):
            # counts of errors over 150 easy + 50 hard samples: the overall error recombines to float rounding
            assert total == pytest.approx((150 * easy + 50 * hard_err) / 200, abs=1e-12)
    (curve,) = label_curves(table.rows, tuple(TransferConfig.model_fields))
    assert [(e["family"], e["K"]) for e in curve["rows"]] == [("fine", 10), ("global k-means", 4), ("random", 4)]
    assert all({"all_accuracy", "easy_accuracy", "hard_accuracy"} <= e.keys() for e in curve["rows"])
    # three sources cached (one per label function) plus the hard-sample reference
    assert len(list((tmp_path / "cache" / "sources").glob("*.pt"))) == 4
    report = subprocess.run([sys.executable, "-m", "transferlab.cli", "report", str(tmp_path / "s.db"), "--output",
                             str(tmp_path / "report.html")], capture_output=True, text=True, timeout=900)
    assert report.returncode == 0, report.stderr
    assert list((tmp_path / "figures").glob("transfer_labels_*.png"))
    assert sqlite3.connect(tmp_path / "s.db").execute("select count(*) from cells").fetchone()[0] == 3


def test_rows_stored_before_the_easy_hard_split_still_analyse() -> None:
    from transferlab.experiments.base import ResultTable
    from transferlab.experiments.transfer import TransferExperiment

    rows = []
    for labels, errors in (("fine", [0.2, 0.3]), ("kmeans:20", [0.25, 0.35])):
        cfg = TransferConfig(source="trained:fashion_mnist", target_labels="coarse", n=20, protocol="linear_probe",
                             source_labels=labels, instances=2).model_dump()
        del cfg["hard_fraction"]  # an older store's config
        rows.append({**cfg, "k": 3, "n_blocks": 3, "test_error": float(np.mean(errors)), "test_error_instances": errors,
                     "test_loss": 0.0, "converged": True, "unconverged": 0, "stop_epoch_instances": [],
                     "source_classes": 10 if labels == "fine" else 20, "replicate": 0})
    results = TransferExperiment().analyze(ResultTable(rows=rows))
    (curve,) = results.data["label_curves"]
    # accuracies are 1 - the pooled mean error: (0.2 + 0.3) / 2 and (0.25 + 0.35) / 2, to float rounding
    assert [e["all_accuracy"] for e in curve["rows"]] == pytest.approx([0.75, 0.7], abs=1e-12)
    assert "easy_accuracy" not in curve["rows"][0]
