"""Representation similarity between two ``(n_samples, n_features)`` representations of the same inputs.

Kernel alignment (linear / RBF CKA, biased and debiased HSIC, streaming accumulator), canonical
correlations (mean CCA, SVCCA, PWCCA), shape metrics (orthogonal Procrustes, angular), RSA, k-NN
neighbourhood overlap and information imbalance. Formulas and sources: each function's docstring
(bibliography: ``docs/references.md``).
"""

from __future__ import annotations

from transferlab.measures._cca import (
    angular_shape_distance,
    canonical_correlations,
    cca_similarity,
    procrustes_distance,
)
from transferlab.measures._cka import LinearCKAAccumulator, cka_similarity, hsic, hsic_gram
from transferlab.measures._neighbours import (
    information_imbalance,
    knn_label_overlap,
    knn_overlap,
    rsa_similarity,
)

__all__ = [
    "cka_similarity",
    "hsic",
    "hsic_gram",
    "LinearCKAAccumulator",
    "canonical_correlations",
    "cca_similarity",
    "procrustes_distance",
    "angular_shape_distance",
    "rsa_similarity",
    "knn_overlap",
    "knn_label_overlap",
    "information_imbalance",
]
