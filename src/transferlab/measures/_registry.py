"""Registry of measures and their declared mathematical properties.

One entry per measure (a function called with its defaults) saying what it takes, what it returns,
and which properties hold. The CLI lists and calls measures through it; the test-suite checks every
declaration generically (a property declared ``False`` is asserted to FAIL on generic data).

Input kinds:

- ``"pair"``: two representations of the same ``n`` inputs, ``X (n, p)``, ``Y (n, q)``; invariances
  are with respect to transforming the first argument ``X`` only.
- ``"samples"``: two samples ``X (n, d)``, ``Y (m, d)`` of distributions in one space; invariances
  are with respect to transforming both samples by the same map.
- ``"single"``: one array ``X (n, d)``.
- ``"features_labels"``: features ``(n, d)`` and class labels ``(n,)``; transform the features.
- ``"predictions_labels"``: source-model probabilities or labels and target labels.

Invariance keys: ``orthogonal`` (``X Q``), ``isotropic_scaling`` (``c X``), ``translation``
(``X + 1 t^T``), ``permutation`` (of features, ``X P``), ``invertible_linear`` (``X A``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from transferlab.errors import ConfigError
from transferlab.measures import _cca, _cka, _neighbours, _predictors, dimension, divergence, transferability

__all__ = ["MeasureInfo", "MEASURES", "ALIASES", "get_measure", "list_measures", "INVARIANCES"]

INVARIANCES = ("orthogonal", "isotropic_scaling", "translation", "permutation", "invertible_linear")

InputKind = Literal["pair", "samples", "single", "features_labels", "predictions_labels"]


@dataclass(frozen=True)
class MeasureInfo:
    """What a measure takes and returns, and its declared properties (``None`` = not applicable)."""

    name: str
    func: Callable[..., float]
    inputs: InputKind
    returns: str
    symmetric: bool | None = None
    identity: float | None = None  # value on equal inputs; "2/n" style values use identity_per_n
    identity_per_n: Callable[[int], float] | None = None
    metric: bool = False
    invariances: Mapping[str, bool] = field(default_factory=dict)
    #: the complete result reported by the CLI, where ``func`` returns one component of it
    report: Callable[..., Any] | None = None

    def invariance_text(self) -> str:
        """One line: ``orthogonal yes, ...`` for the CLI listing."""
        if not self.invariances:
            return "n/a"
        return ", ".join(f"{k.replace('_', ' ')} {'yes' if v else 'no'}" for k, v in self.invariances.items())


def _inv(orthogonal: bool, scaling: bool, translation: bool, permutation: bool, linear: bool) -> dict[str, bool]:
    return dict(zip(INVARIANCES, (orthogonal, scaling, translation, permutation, linear), strict=True))


_SIMILARITY_INV = _inv(True, True, True, True, False)
_AFFINE_INV = _inv(True, True, True, True, True)
_DISTANCE_INV = _inv(True, False, True, True, False)


def _imbalance_xy(x, y) -> float:
    return _neighbours.information_imbalance(x, y)[0]


def _imbalance_both(x, y) -> dict[str, float]:
    xy, yx = _neighbours.information_imbalance(x, y)
    return {"x_to_y": xy, "y_to_x": yx}


_ENTRIES = [
    MeasureInfo("cka_linear", _cka.cka_similarity, "pair", "linear CKA in [0, 1]", True, 1.0, invariances=_SIMILARITY_INV),
    MeasureInfo(
        "cka_linear_debiased", partial(_cka.cka_similarity, debiased=True), "pair",
        "debiased linear CKA (<= 1, ~0 for independent)", True, 1.0, invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "cka_rbf", partial(_cka.cka_similarity, kernel="rbf"), "pair",
        "RBF-kernel CKA, median-heuristic bandwidth, in [0, 1]", True, 1.0, invariances=_SIMILARITY_INV,
    ),
    MeasureInfo("cca_mean", _cca.cca_similarity, "pair", "mean canonical correlation in [0, 1]", True, 1.0, invariances=_AFFINE_INV),
    MeasureInfo(
        "svcca", partial(_cca.cca_similarity, variant="svcca"), "pair",
        "SVCCA (99% variance kept) in [0, 1]", True, 1.0, invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "pwcca", partial(_cca.cca_similarity, variant="pwcca"), "pair",
        "projection-weighted CCA in [0, 1] (weights from the side with fewer features, X if equal; properties as for equal widths)", False, 1.0,
        invariances=_inv(False, True, True, True, False),
    ),
    MeasureInfo(
        "procrustes_distance", _cca.procrustes_distance, "pair", "orthogonal Procrustes shape distance in [0, sqrt(2)]",
        True, 0.0, metric=True, invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "angular_shape_distance", _cca.angular_shape_distance, "pair", "angular shape metric in [0, pi/2]",
        True, 0.0, metric=True, invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "rsa_similarity", _neighbours.rsa_similarity, "pair",
        "Spearman correlation of correlation-distance RDMs in [-1, 1]", True, 1.0,
        invariances=_inv(False, True, False, True, False),
    ),
    MeasureInfo("knn_overlap", _neighbours.knn_overlap, "pair", "10-NN overlap in [0, 1]", True, 1.0, invariances=_SIMILARITY_INV),
    MeasureInfo(
        "information_imbalance", _imbalance_xy, "pair",
        "Delta(X->Y) in [2/n, ~1] (the CLI prints both directions)", False,
        identity_per_n=lambda n: 2.0 / n, invariances=_SIMILARITY_INV, report=_imbalance_both,
    ),
    MeasureInfo("gaussian_kl", divergence.gaussian_kl, "samples", "KL(N_X || N_Y) of Gaussian fits, nats", False, 0.0, invariances=_AFFINE_INV),
    MeasureInfo("knn_kl", divergence.knn_kl, "samples", "1-NN estimate of KL(P_X || P_Y), nats", False, None, invariances=_SIMILARITY_INV),
    MeasureInfo(
        "mmd2", divergence.mmd2, "samples", "unbiased MMD^2, RBF kernel, median heuristic", True, None,
        invariances=_SIMILARITY_INV,
    ),
    MeasureInfo("wasserstein_distance", divergence.wasserstein_distance, "samples", "exact W_1 (equal n, or 1-D)", True, 0.0, metric=True, invariances=_DISTANCE_INV),
    MeasureInfo(
        "wasserstein2_distance", partial(divergence.wasserstein_distance, p=2), "samples", "exact W_2 (equal n, or 1-D)",
        True, 0.0, metric=True, invariances=_DISTANCE_INV,
    ),
    MeasureInfo(
        "sliced_wasserstein_distance", divergence.sliced_wasserstein_distance, "samples",
        "sliced W_1, 256 fixed random directions", True, 0.0, metric=True, invariances=_inv(False, False, True, False, False),
    ),
    MeasureInfo(
        "bures_wasserstein_distance", divergence.bures_wasserstein_distance, "samples", "W_2 between Gaussian fits",
        True, 0.0, metric=True, invariances=_DISTANCE_INV,
    ),
    MeasureInfo("energy_distance", divergence.energy_distance, "samples", "energy distance (V-statistic, sqrt)", True, 0.0, metric=True, invariances=_DISTANCE_INV),
    MeasureInfo("twonn_dimension", dimension.twonn_dimension, "single", "TwoNN intrinsic dimension", invariances=_SIMILARITY_INV),
    MeasureInfo("mle_dimension", dimension.mle_dimension, "single", "Levina-Bickel MLE intrinsic dimension (k=20)", invariances=_SIMILARITY_INV),
    MeasureInfo("logme_score", transferability.logme_score, "features_labels", "LogME evidence per sample (higher better)", invariances=_inv(True, True, False, True, False)),
    MeasureInfo("h_score", transferability.h_score, "features_labels", "H-score in [0, min(d, C-1)] (higher better)", invariances=_AFFINE_INV),
    MeasureInfo(
        "h_score_shrinkage", partial(transferability.h_score, shrinkage="ledoit-wolf"), "features_labels",
        "Ledoit-Wolf regularised H-score (higher better)", invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "feature_overlap", partial(transferability.feature_overlap, task="classification"), "features_labels",
        "fraction of one-hot target outside the feature span, [0, 1] (lower better)", invariances=_AFFINE_INV,
    ),
    MeasureInfo(
        "nleep_score", _predictors.nleep_score, "features_labels",
        "NLEEP: LEEP of a 5C-component GMM on 80%-variance PCA features, <= 0 (higher better)",
        invariances=_inv(True, True, True, True, False),
    ),
    MeasureInfo(
        "gbc_score", _predictors.gbc_score, "features_labels",
        "GBC, spherical class Gaussians on <= 64 PCs, in [-C(C-1), 0) (higher better)", invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "gbc_score_diagonal", partial(_predictors.gbc_score, gaussian="diagonal"), "features_labels",
        "GBC, diagonal class Gaussians on <= 64 PCs, in [-C(C-1), 0) (higher better)", invariances=_SIMILARITY_INV,
    ),
    MeasureInfo(
        "transrate_score", _predictors.transrate_score, "features_labels",
        "TransRate coding-rate difference, nats, eps = 1% of mean variance (higher better)", invariances=_SIMILARITY_INV,
    ),
    MeasureInfo("knn_label_overlap", _neighbours.knn_label_overlap, "features_labels", "10-NN label agreement in [0, 1]", invariances=_SIMILARITY_INV),
    MeasureInfo("leep_score", transferability.leep_score, "predictions_labels", "LEEP in [log(1/C)-ish, 0] (higher better)"),
    MeasureInfo("nce_score", transferability.nce_score, "predictions_labels", "negative conditional entropy in [-H(Y), 0]"),
]

MEASURES: Mapping[str, MeasureInfo] = {entry.name: entry for entry in _ENTRIES}

# Function names that users may type for the registry entry computing them with defaults.
ALIASES: Mapping[str, str] = {
    "cka_similarity": "cka_linear",
    "cca_similarity": "cca_mean",
}


def list_measures() -> list[MeasureInfo]:
    """Every registered measure, in registry order."""
    return list(MEASURES.values())


def get_measure(name: str) -> MeasureInfo:
    """The entry called ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return MEASURES[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(f"unknown measure {name!r}; known measures: {', '.join(MEASURES)}") from None
