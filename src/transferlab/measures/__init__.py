"""transferlab.measures: pure functions of ``(n_samples, n_features)`` arrays.

Numpy arrays and torch tensors are accepted (converted once); computation is float64. Names say
what they return: ``*_similarity`` (higher = more alike), ``*_distance`` (0 on equal inputs),
``*_score`` (transferability, higher = better), ``*_dimension``, KL/MMD divergences.

- similarity: :func:`cka_similarity`, :func:`hsic`, :class:`LinearCKAAccumulator`,
  :func:`cca_similarity`, :func:`procrustes_distance`, :func:`angular_shape_distance`,
  :func:`rsa_similarity`, :func:`knn_overlap`, :func:`knn_label_overlap`, :func:`information_imbalance`
- dimension: :func:`twonn_dimension`, :func:`twonn_profile`, :func:`mle_dimension`
- divergence: :func:`gaussian_kl`, :func:`knn_kl`, :func:`mmd2`, :func:`wasserstein_distance`,
  :func:`sliced_wasserstein_distance`, :func:`bures_wasserstein_distance`, :func:`energy_distance`,
  :func:`linear_gaussian_kl`
- transferability: :func:`logme_score`, :func:`leep_score`, :func:`nce_score`, :func:`h_score`,
  :func:`feature_overlap`, :func:`nleep_score`, :func:`gbc_score` (with
  :func:`class_bhattacharyya_coefficients`), :func:`transrate_score`
- ranking (evaluating predictors against measured accuracies): :func:`weighted_kendall_tau`,
  :func:`pearson_correlation`, :func:`correlation_table`, :func:`stability_report`
- capture: :func:`capture_activations` (torch modules -> arrays)
- registry: :func:`list_measures`, :func:`get_measure` (declared properties; used by the CLI)

Bad input raises :class:`transferlab.errors.DataError` (bad options: ``ConfigError``); no measure
returns NaN.
"""

from __future__ import annotations

from transferlab.measures._predictors import (
    class_bhattacharyya_coefficients,
    gbc_score,
    nleep_score,
    transrate_score,
)
from transferlab.measures._registry import MeasureInfo, get_measure, list_measures
from transferlab.measures.capture import capture_activations
from transferlab.measures.dimension import DimensionProfile, mle_dimension, twonn_dimension, twonn_profile
from transferlab.measures.divergence import (
    bures_wasserstein_distance,
    energy_distance,
    gaussian_kl,
    gaussian_kl_from_moments,
    knn_kl,
    linear_gaussian_kl,
    mmd2,
    sliced_wasserstein_distance,
    wasserstein_distance,
)
from transferlab.measures.ranking import (
    StabilityReport,
    correlation_table,
    pearson_correlation,
    stability_report,
    weighted_kendall_tau,
)
from transferlab.measures.similarity import (
    LinearCKAAccumulator,
    angular_shape_distance,
    canonical_correlations,
    cca_similarity,
    cka_similarity,
    hsic,
    hsic_gram,
    information_imbalance,
    knn_label_overlap,
    knn_overlap,
    procrustes_distance,
    rsa_similarity,
)
from transferlab.measures.transferability import (
    feature_overlap,
    h_score,
    ledoit_wolf_shrinkage,
    leep_score,
    logme_score,
    nce_score,
)

__all__ = [
    # similarity
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
    # dimension
    "twonn_dimension",
    "twonn_profile",
    "mle_dimension",
    "DimensionProfile",
    # divergence
    "gaussian_kl",
    "gaussian_kl_from_moments",
    "knn_kl",
    "mmd2",
    "wasserstein_distance",
    "sliced_wasserstein_distance",
    "bures_wasserstein_distance",
    "energy_distance",
    "linear_gaussian_kl",
    # transferability
    "logme_score",
    "leep_score",
    "nce_score",
    "h_score",
    "ledoit_wolf_shrinkage",
    "feature_overlap",
    "nleep_score",
    "gbc_score",
    "class_bhattacharyya_coefficients",
    "transrate_score",
    # ranking
    "weighted_kendall_tau",
    "pearson_correlation",
    "correlation_table",
    "stability_report",
    "StabilityReport",
    # capture and registry
    "capture_activations",
    "MeasureInfo",
    "list_measures",
    "get_measure",
]
