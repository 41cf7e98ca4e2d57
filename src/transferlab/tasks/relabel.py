"""Label functions on real image data: fine, coarse, random and k-means relabellings (Hong et al. 2024).

A label function says which classes a network is pretrained on. It is written as a short string:

===========================  ===================================================================================
``"fine"``                   the data set's own classes
``"coarse"``                 the coarse classes of its hierarchy (``ImageDataset.hierarchy``)
``"coarse:G"``               the coarse classes of its named grouping G (:data:`~transferlab.tasks.images.GROUPINGS`)
``"random:K"``               a balanced random relabelling into K classes: image i of a split of n images gets
                             class ``perm(n)[i] mod K`` for a seeded permutation (class sizes differ by at most 1)
``"kmeans:K"``               k-means with K clusters over all images, ignoring the hierarchy ("global")
``"kmeans-aligned:K[:G]"``   k-means within each coarse class (of the hierarchy, or of grouping G), K clusters
                             in all ("aligned": every cluster lies in one coarse class)
===========================  ===================================================================================

K >= 2; for the aligned clustering K >= the number of coarse classes C. Coarse class c gets K_c clusters in
proportion to its number of images (largest remainders, at least 1 each), so with K = C the aligned
clustering *is* the coarse labelling.

Clustering features (ours; the paper clusters CLIP ViT-L/14 embeddings of iNaturalist images, which cannot
be computed offline here): the centred pixels projected on their first ``dims`` (default 50) principal
components, fitted on the images being labelled (:func:`pca`). k-means is Lloyd's algorithm from a
k-means++ initialisation (:func:`transferlab.measures._gmm.kmeans`, the one k-means of the package, shared with the NLEEP mixture
in :mod:`transferlab.measures`), float64, seeded; an emptied cluster takes the worst-fitted point of a
cluster with more than one. Further splits (validation, test images) are labelled by the nearest centroid
(within their own coarse class for the aligned clustering, so they nest too) and, for random labels, by an
independent balanced draw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError
from transferlab.tasks.images import LabelHierarchy, static_hierarchy

__all__ = ["LabelFunction", "aligned_cluster_counts", "parse_label_function", "pca",
           "relabel"]

Kind = Literal["fine", "coarse", "random", "kmeans-aligned"]

_GRAMMAR = re.compile(r"^(?:(?P<level>fine|coarse(?::(?P<grouping>[a-z_]+))?)"
                      r"|(?P<kind>random|kmeans|kmeans-aligned):(?P<k>\d+)(?::(?P<kgrouping>[a-z_]+))?)$")
_FORMS = "fine, coarse, coarse:G, random:K, kmeans:K or kmeans-aligned:K[:G]"


@dataclass(frozen=True)
class LabelFunction:
    """A parsed label function (see the module docstring).

    Attributes:
        kind: ``"fine"``, ``"coarse"``, ``"random"``, ``"kmeans"`` or ``"kmeans-aligned"``.
        k: the number of classes K of random and k-means labels; None for fine and coarse.
        grouping: the named grouping of ``coarse:G`` and ``kmeans-aligned:K:G``; None for the default hierarchy.
    """

    kind: Kind
    k: int | None = None
    grouping: str | None = None

    @property
    def uses_hierarchy(self) -> bool:
        """Whether the labels need a hierarchy (coarse and aligned k-means)."""
        return self.kind in ("coarse", "kmeans-aligned")

    def n_classes(self, n_fine: int, hierarchy: LabelHierarchy | None) -> int:
        """K: the number of classes this function labels with, for a data set of ``n_fine`` classes."""
        if self.kind == "fine":
            return n_fine
        if self.kind == "coarse":
            assert hierarchy is not None  # checked by parse_label_function
            return hierarchy.n_coarse
        assert self.k is not None
        return self.k


def parse_label_function(text: str, dataset: str | None = None) -> LabelFunction:
    """Parse a label function string; with ``dataset`` (a data set name), also check it against that data
    set's hierarchy without loading images (:func:`~transferlab.tasks.images.static_hierarchy`).

    Raises:
        ConfigError: one line naming the problem: a malformed string, K < 2, a hierarchy or grouping the
            data set lacks, or an aligned K below the number of coarse classes.
    """
    match = _GRAMMAR.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"label function {text!r} is not one of {_FORMS} (K an integer >= 2, G a grouping name)")
    if match["level"] is not None:
        fn = LabelFunction("coarse" if match["level"].startswith("coarse") else "fine", None, match["grouping"])
    else:
        k = int(match["k"])
        if k < 2:
            raise ConfigError(f"label function {text!r}: K must be at least 2, got {k}")
        if match["kind"] != "kmeans-aligned" and match["kgrouping"] is not None:
            raise ConfigError(f"label function {text!r}: only kmeans-aligned:K:G takes a grouping")
        fn = LabelFunction(match["kind"], k, match["kgrouping"])
    if dataset is not None and fn.uses_hierarchy:
        hierarchy = static_hierarchy(dataset, fn.grouping)
        if hierarchy is None:
            raise ConfigError(f"label function {text!r} needs a label hierarchy; data set {dataset!r} has none")
        if fn.kind == "kmeans-aligned" and fn.k is not None and fn.k < hierarchy.n_coarse:
            raise ConfigError(f"label function {text!r}: aligned k-means needs K >= the {hierarchy.n_coarse} "
                              f"coarse classes of {dataset!r}")
    return fn


# --------------------------------------------------------------------------------------------------
# features and k-means
# --------------------------------------------------------------------------------------------------


def pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the rows of ``x`` (n, D): ``(mean (D,), components (D, q))`` with q = min(dims,
    D) orthonormal columns, the leading eigenvectors of the covariance (x - mean)^T (x - mean) (float64,
    by a symmetric eigendecomposition, descending eigenvalues). Features of any images z (m, D) are
    ``(z - mean) @ components``; the signs of the components are fixed (largest-magnitude entry positive),
    so the result is deterministic."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    dims = check_int(dims, "dims", low=1)
    mean = x.mean(0)
    centred = x - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, : min(dims, x.shape[1])]
    signs = np.sign(components[np.abs(components).argmax(0), np.arange(components.shape[1])])
    return mean, components * np.where(signs == 0, 1.0, signs)


def aligned_cluster_counts(group_sizes: np.ndarray, k: int) -> np.ndarray:
    """K_c, the clusters of each coarse class c for aligned k-means with K = ``k`` in all, summing to K:
    proportional to the class sizes n_c (quota q_c = K n_c / sum n), each at least 1. Start from
    max(1, floor(q_c)); while the sum is short, add one to the class with the largest q_c - K_c; while it
    is over (the floor of 1 can overshoot), take one from the class with the largest K_c - q_c among those
    above 1 (ties to the lower index). With K = C (the number of classes) every K_c is 1.

    Raises:
        ConfigError: K below the number of coarse classes, or a class with fewer images than its clusters.
    """
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if k < sizes.size:
        raise ConfigError(f"aligned k-means: K = {k} is below the {sizes.size} coarse classes")
    quota = k * sizes / sizes.sum()
    counts = np.maximum(1, np.floor(quota)).astype(np.int64)
    while counts.sum() < k:
        counts[np.argmax(quota - counts)] += 1
    while counts.sum() > k:
        counts[np.argmax(np.where(counts > 1, counts - quota, -np.inf))] -= 1
    if np.any(counts > sizes):
        c = int(np.flatnonzero(counts > sizes)[0])
        raise DataError(f"aligned k-means: coarse class {c} has {sizes[c]} images for {counts[c]} clusters")
    return counts


# --------------------------------------------------------------------------------------------------
# relabelling
# --------------------------------------------------------------------------------------------------


def _balanced_random(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.permutation(n) % k).astype(np.int64)


def relabel(fn: LabelFunction, x: np.ndarray, y: np.ndarray, hierarchy: LabelHierarchy | None,
            rng: np.random.Generator, *, others: tuple[tuple[np.ndarray, np.ndarray], ...] = (), dims: int = 50
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels of ``fn`` for the images ``x`` (n, ...) with fine labels ``y`` (n,), and for every further
    split ``(x_j, y_j)`` in ``others``: ``(labels (n,), [labels_j])``, int64 in 0..K-1.

    Random and k-means labels are fitted on ``x`` only (PCA with ``dims`` components and the clustering);
    the other splits are labelled as the module docstring says. ``hierarchy`` is needed by coarse and
    aligned labels. Seeded by ``rng`` (the same state gives the same labels).

    Raises:
        ConfigError: a function that needs a hierarchy without one, or an aligned K below its coarse classes.
    """
    if fn.uses_hierarchy and hierarchy is None:
        raise ConfigError(f"label function {fn.kind} needs a label hierarchy; the data set has none")
    if fn.kind == "fine":
        return np.asarray(y, dtype=np.int64), [np.asarray(yo, dtype=np.int64) for _, yo in others]
    if fn.kind == "coarse":
        assert hierarchy is not None
        return hierarchy.coarsen(y), [hierarchy.coarsen(yo) for _, yo in others]
    assert fn.k is not None
    if fn.kind == "random":
        return _balanced_random(len(y), fn.k, rng), [_balanced_random(len(yo), fn.k, rng) for _, yo in others]
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean, components = pca(flat, dims)
    # imported here: transferlab.measures loads scipy, which a run that only parses label names must not
    from transferlab.measures._geometry import sq_distances
    from transferlab.measures._gmm import kmeans

    features = (flat - mean) @ components
    other_features = [(np.asarray(xo, dtype=np.float64).reshape(len(xo), -1) - mean) @ components for xo, _ in others]
    if fn.kind == "kmeans":
        result = kmeans(features, fn.k, rng)
        return result.labels, [sq_distances(f, result.centroids).argmin(1) for f in other_features]
    assert hierarchy is not None
    groups = hierarchy.coarsen(y)
    other_groups = [hierarchy.coarsen(yo) for _, yo in others]
    counts = aligned_cluster_counts(np.bincount(groups, minlength=hierarchy.n_coarse), fn.k)
    labels = np.empty(len(y), dtype=np.int64)
    other_labels = [np.empty(len(g), dtype=np.int64) for g in other_groups]
    offset = 0
    for c, k_c in enumerate(counts):
        members = np.flatnonzero(groups == c)
        result = kmeans(features[members], int(k_c), rng)
        labels[members] = offset + result.labels
        for f, g, out in zip(other_features, other_groups, other_labels, strict=True):
            inside = np.flatnonzero(g == c)
            out[inside] = offset + sq_distances(f[inside], result.centroids).argmin(1)
        offset += int(k_c)
    return labels, other_labels
