"""Hierarchical multi-view data: superclasses split into subclasses, patch inputs that carry a common
(superclass) feature and a fine-grained (subclass) feature, easy and hard samples, and the label functions
(fine, coarse, random, aligned and global clusterings) of a label-granularity experiment.

Sources. Multi-view data -- inputs made of patches, each patch carrying one of a few orthonormal class
features plus Gaussian noise, with optional small "feature noise" from other classes -- are Allen-Zhu & Li
(2023), "Towards understanding ensemble, knowledge distillation and self-distillation in deep learning"
(ICLR 2023; arXiv:2012.09816). The *hierarchical* version is Hong, Cui, Fuxman, Chan & Luo (2024), "Why
fine-grained labels in pretraining benefit generalization?" (TMLR; arXiv:2410.23129), and its predecessor
"Towards understanding the effect of pretraining label granularity" (arXiv:2303.16887): an orthonormal
feature dictionary with one common feature per superclass and one fine-grained feature per subclass;
patch-structured inputs in which some patches carry the common feature, some the fine-grained one;
training on easy samples only; hard test samples whose common feature is removed or weakened. Their
experiments compare pretraining label functions: the manual hierarchy at several levels, k-means
clusterings within each superclass (aligned with the hierarchy) or over the whole data set (not aligned),
and random class assignments.

What is the papers' and what is transferlab's reconstruction. The structure above is the papers'. The
exact constants of Hong et al. (the strengths, the number of feature patches, the noise scaling, how hard
samples are weakened) were not checked against their text, so every formula below -- the fixed patch
counts at random positions, the strength spread, the noise normalisation, the scale knob for hard samples,
the fine-feature probability, distractors drawn from the other superclasses, the class frequencies, and
the exact partitions that stand in for the paper's clusterings -- is transferlab's reconstruction (see
``docs/models/multiview.md``). With orthonormal features every two subclasses are equally far apart, so a
clustering of subclasses is a partition chosen by a rule; ours are balanced contiguous (optionally
shuffled) partitions.

The dictionary (:class:`MultiViewFeatures`, :func:`multiview_features`). C superclasses with k subclasses
each; fine class f = c k + j for superclass c in [C] and subclass j in [k]. M = C (1 + k) orthonormal
vectors in R^d (d >= M): common features v_c (C, d) and fine features v_{c,j} (C, k, d), stacked as
``dictionary`` (M, d) with row c = v_c and row C + f = v_{c,j}.

The data (:func:`multiview_data`). A sample of fine class f = (c, j) is X = (x_1, ..., x_P), x_p in R^d.
Its patches are split at random (a uniformly random permutation) into P_c common patches S_c, P_f fine
patches S_f and P - P_c - P_f noise patches S_0, and

    x_p = kappa_i  alpha a_p v_c      + sigma xi_p      p in S_c   (common patches)
    x_p = phi_i    beta  b_p v_{c,j}  + sigma xi_p      p in S_f   (fine patches)
    x_p = gamma u_p                   + sigma xi_p      p in S_0   (noise patches)

    kappa_i = hard_scale if sample i is hard else 1        hard with probability ``hard``
    phi_i   = 1 if sample i is hard, else Bernoulli(fine_probability)
    a_p, b_p ~ U[1 - delta, 1 + delta]                     (``strength_spread`` delta; 1 when delta = 0)
    u_p uniform over the (C - 1)(1 + k) features of the other superclasses (``feature_noise`` gamma)
    xi_p ~ N(0, I_d),  sigma = noise / sqrt(d)             (so E ||sigma xi_p||^2 = noise^2)

so, with the features orthonormal, <x_p, v_c> = kappa_i alpha a_p + sigma <xi_p, v_c> with
sigma <xi_p, v_c> ~ N(0, sigma^2), and likewise for every dictionary row. Easy samples carry both features;
hard samples carry the fine feature and the common one scaled by ``hard_scale`` (0 removes it: the common
patches become pure noise). The fine feature is "rare" three ways: it belongs to 1/k of its superclass's
samples (the hierarchy), it may sit in fewer patches (P_f < P_c) or be weaker (beta < alpha), and easy
samples may lack it (``fine_probability`` < 1). Labels: fine f, coarse c = f // k.

Label functions (:class:`LabelMap`): a map from the C k fine classes to ``n_classes`` new classes,
applied to fine labels. ``fine`` (identity), ``coarse`` (f -> c), ``aligned`` (subclasses grouped within
each superclass; aligned(C k) = fine, aligned(C) = coarse), ``global`` (groups that cut across
superclasses) and ``random`` (a seeded balanced random partition of the fine classes).

Randomness: every function takes the generator it draws from (a ``torch.Generator`` or a
``numpy.random.Generator``); draws are float64 and their order, documented per function, does not depend on
the strengths, the noise level or the probabilities of hard samples and fine features, so one seed gives
the same classes, patch positions and noise across a sweep of those knobs (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, overload

import numpy as np
import torch
from numpy.typing import ArrayLike

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.tasks._random import RandomSource, standard_normal
from transferlab.tasks.images import LabelHierarchy, check_labels

__all__ = [
    "LABEL_MAPS",
    "LabelMap",
    "MultiViewData",
    "MultiViewFeatures",
    "aligned_label_map",
    "coarse_label_map",
    "fine_label_map",
    "global_label_map",
    "label_map",
    "multiview_data",
    "multiview_features",
    "random_label_map",
]

#: The label functions :func:`label_map` can build.
LABEL_MAPS: tuple[str, ...] = ("fine", "coarse", "aligned", "global", "random")

# Orthonormality of the dictionary, checked on construction (float64 QR reaches about 1e-15; a user's
# float32 dictionary about 1e-7).
_ORTHONORMAL_TOL = 1e-10
_ORTHONORMAL_TOL_NARROW = 1e-5
# Class probabilities must sum to 1 within this.
_PROB_SUM_TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# validation and draws
# --------------------------------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], generator: RandomSource) -> torch.Tensor:
    """I.i.d. U[0, 1) draws of the given shape as a float64 CPU tensor."""
    if isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=torch.float64)
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.random(shape))
    raise ConfigError(
        f"generator must be a torch.Generator or numpy.random.Generator, got {type(generator).__name__}"
    )


def _balanced_groups(size: int, groups: int) -> np.ndarray:
    """Group of each position t in [size] when cut into ``groups`` contiguous blocks: floor(t groups / size).

    Every block is non-empty (groups <= size) and block sizes differ by at most one.
    """
    return (np.arange(size, dtype=np.int64) * groups) // size


# --------------------------------------------------------------------------------------------------
# the feature dictionary
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MultiViewFeatures:
    """The orthonormal feature dictionary of a hierarchical multi-view task (Hong et al. 2024).

    C superclasses with k subclasses each; fine class f = c k + j (superclass c in [C], subclass j in [k]).

    Attributes:
        common: v_c, shape (C, d): one common feature per superclass.
        fine: v_{c,j}, shape (C, k, d): one fine-grained feature per subclass.

    All C (1 + k) vectors are orthonormal: ``dictionary @ dictionary.T = I`` (checked to 1e-10 in float64,
    1e-5 when either tensor is in a narrower dtype).

    Raises:
        DataError: the arrays are not finite float tensors of shapes (C, d) and (C, k, d), or the vectors
            are not orthonormal.
    """

    common: torch.Tensor
    fine: torch.Tensor

    def __post_init__(self) -> None:
        common, fine = self.common, self.fine
        if not isinstance(common, torch.Tensor) or common.ndim != 2 or not common.is_floating_point():
            raise DataError("common must be a 2-D float tensor of shape (C, d)")
        if not isinstance(fine, torch.Tensor) or fine.ndim != 3 or not fine.is_floating_point():
            raise DataError("fine must be a 3-D float tensor of shape (C, k, d)")
        C, d = common.shape
        if C < 1 or fine.shape[1] < 1 or fine.shape[0] != C or fine.shape[2] != d:
            raise DataError(
                f"common has shape {tuple(common.shape)} and fine {tuple(fine.shape)}; need (C, d) and (C, k, d) "
                "with C, k >= 1"
            )
        D = self.dictionary
        if not bool(torch.isfinite(D).all()):
            raise DataError("common and fine must be finite")
        gram = D @ D.T
        error = float((gram - torch.eye(D.shape[0], dtype=torch.float64)).abs().max())
        wide = common.dtype == fine.dtype == torch.float64
        if error > (_ORTHONORMAL_TOL if wide else _ORTHONORMAL_TOL_NARROW):
            raise DataError(f"the features must be orthonormal; max |V V^T - I| = {error:.3g}")

    @property
    def n_superclasses(self) -> int:
        """C, the number of superclasses (coarse classes)."""
        return int(self.common.shape[0])

    @property
    def n_subclasses(self) -> int:
        """k, the number of subclasses of each superclass."""
        return int(self.fine.shape[1])

    @property
    def n_fine(self) -> int:
        """C k, the number of fine classes."""
        return self.n_superclasses * self.n_subclasses

    @property
    def dim(self) -> int:
        """d, the dimension of each patch."""
        return int(self.common.shape[1])

    @property
    def dictionary(self) -> torch.Tensor:
        """All features stacked, float64 of shape (C (1 + k), d): row c = v_c, row C + c k + j = v_{c,j}.

        ``x @ dictionary.T`` gives the projection of every patch on every feature, shape (..., P, C (1 + k)).
        """
        C, k, d = self.n_superclasses, self.n_subclasses, self.dim
        return torch.cat([self.common, self.fine.reshape(C * k, d)]).to(torch.float64)

    @property
    def fine_to_coarse(self) -> torch.Tensor:
        """The hierarchy, int64 of shape (C k,): fine class f = c k + j belongs to superclass f // k = c."""
        return torch.arange(self.n_fine, dtype=torch.int64) // self.n_subclasses

    def label_hierarchy(self) -> LabelHierarchy:
        """The hierarchy as a :class:`~transferlab.tasks.images.LabelHierarchy` (coarse classes named "0".."C-1")."""
        return LabelHierarchy(self.fine_to_coarse.numpy(), tuple(str(c) for c in range(self.n_superclasses)))


def multiview_features(
    n_superclasses: int, n_subclasses: int, d: int, *, generator: RandomSource
) -> MultiViewFeatures:
    """Draw a uniformly random orthonormal dictionary: C common and C k fine features in R^d.

    M = C (1 + k) orthonormal vectors are the columns of Q from the QR decomposition G = Q R of a Gaussian
    d x M matrix G, with the signs fixed so that diag(R) > 0 (then Q is Haar-distributed: a uniformly
    random orthonormal M-frame). Rows of the result: v_c = Q[:, c], v_{c,j} = Q[:, C + c k + j].

    Draws: G (d * M normals, row-major).

    Args:
        n_superclasses: C >= 1.
        n_subclasses: k >= 1, subclasses per superclass.
        d: patch dimension, d >= C (1 + k) (orthonormal features need that many dimensions).
        generator: the source of all randomness.

    Returns:
        The dictionary: ``common`` (C, d) and ``fine`` (C, k, d), float64.

    Raises:
        ConfigError: C < 1, k < 1, d < C (1 + k), or a bad generator.
    """
    C = check_int(n_superclasses, "n_superclasses", low=1)
    k = check_int(n_subclasses, "n_subclasses", low=1)
    M = C * (1 + k)
    d = check_int(d, "d", low=M, note="n_superclasses * (1 + n_subclasses), one per orthonormal feature")
    G = standard_normal((d, M), generator)
    Q, R = torch.linalg.qr(G, mode="reduced")
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    V = (Q * signs).T.contiguous()  # (M, d)
    return MultiViewFeatures(common=V[:C].clone(), fine=V[C:].reshape(C, k, d).clone())


# --------------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------------


class MultiViewData(NamedTuple):
    """Samples of a hierarchical multi-view task (:func:`multiview_data`).

    Shapes are for ``instances=None``; with ``instances=I`` every field has a leading axis of size I.

    Attributes:
        x: patches, shape (n, P, d), float32 or float64.
        fine: fine labels f = c k + j, shape (n,), int64 in [0, C k).
        coarse: coarse labels c = f // k, shape (n,), int64 in [0, C).
        is_hard: shape (n,), bool: the common feature is scaled by ``hard_scale``.
        has_fine: shape (n,), bool: the fine patches carry the fine feature (always true for hard samples).
    """

    x: torch.Tensor
    fine: torch.Tensor
    coarse: torch.Tensor
    is_hard: torch.Tensor
    has_fine: torch.Tensor


def _class_cdf(class_probs: ArrayLike | torch.Tensor | None, C: int, k: int) -> torch.Tensor | None:
    """Validate (C, k) class probabilities; return their normalised CDF over f = c k + j (None: uniform)."""
    if class_probs is None:
        return None
    if isinstance(class_probs, torch.Tensor):
        class_probs = class_probs.detach().cpu().numpy()
    try:
        p = np.asarray(class_probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"class_probs must be an array of numbers of shape ({C}, {k}): {exc}") from None
    if p.shape != (C, k):
        raise ConfigError(f"class_probs must have shape (n_superclasses, n_subclasses) = ({C}, {k}), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ConfigError("class_probs must be finite and >= 0")
    total = float(p.sum())
    if abs(total - 1.0) > _PROB_SUM_TOL:
        raise ConfigError(f"class_probs must sum to 1, got {total!r}")
    cdf = np.cumsum(p.reshape(-1)) / total
    cdf[-1] = 1.0
    return torch.from_numpy(cdf)


def multiview_data(
    features: MultiViewFeatures,
    n: int,
    generator: RandomSource,
    *,
    patches: int = 16,
    common_patches: int = 4,
    fine_patches: int = 4,
    common_strength: float = 1.0,
    fine_strength: float = 1.0,
    strength_spread: float = 0.0,
    noise: float = 0.5,
    feature_noise: float = 0.0,
    hard: float = 0.0,
    hard_scale: float = 0.0,
    fine_probability: float = 1.0,
    class_probs: ArrayLike | torch.Tensor | None = None,
    instances: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> MultiViewData:
    """Draw n samples of a hierarchical multi-view task (see the module docstring for the model).

    For a sample of fine class f = (c, j), with its patches split uniformly at random into P_c common,
    P_f fine and P - P_c - P_f noise patches:

        x_p = kappa alpha a_p v_c     + sigma xi_p     (common)   kappa = hard_scale (hard) or 1 (easy)
        x_p = phi   beta  b_p v_{c,j} + sigma xi_p     (fine)     phi = 1 (hard), Bernoulli(fine_probability) (easy)
        x_p = gamma u_p               + sigma xi_p     (noise)    u_p: a feature of another superclass

    with a_p, b_p ~ U[1 - delta, 1 + delta], xi_p ~ N(0, I_d) and sigma = noise / sqrt(d). Hence, exactly
    up to the Gaussian term, <x_p, v_c> = kappa alpha a_p on common patches, <x_p, v_{c,j}> = phi beta b_p on
    fine patches, <x_p, u_p> = gamma on noise patches, and every other projection is sigma <xi_p, v> ~ N(0,
    sigma^2). The fine class is drawn from ``class_probs`` (uniform over the C k fine classes by default), so
    P(coarse = c) = sum_j class_probs[c, j]; a sample is hard with probability ``hard``.

    Draws, in order, each over the leading shape (I, n) or (I, n, P): the fine classes (I n uniforms), the
    hard flags (I n uniforms: hard iff u < ``hard``), the fine flags (I n uniforms), the patch positions
    (I n P uniforms, ranked), the strengths a_p, b_p (I n P uniforms), the distractors u_p (I n P uniforms)
    and the noise xi (I n P d normals). All are drawn whatever the knobs (even when noise = 0 or
    hard = 0), so a sweep over the strengths, noise, ``hard``, ``hard_scale``, ``fine_probability`` or
    ``feature_noise`` with one seed keeps the classes, positions and noise (common random numbers); raising
    ``hard`` only turns more samples hard. ``instances=None`` returns ``instances=1`` without its axis; a
    torch generator's draws depend on the requested shape, so instance 0 of ``instances=I`` differs from
    it. Computation is in float64, cast to ``dtype`` at the end.

    Args:
        features: the dictionary, ``common`` (C, d) and ``fine`` (C, k, d).
        n: samples per data set (>= 1).
        generator: the source of all randomness.
        patches: P >= 1, patches per sample.
        common_patches: P_c >= 0, patches carrying the common feature.
        fine_patches: P_f >= 0, patches carrying the fine feature; P_c + P_f <= P.
        common_strength: alpha >= 0.
        fine_strength: beta >= 0.
        strength_spread: delta in [0, 1], the relative spread of the per-patch strengths a_p, b_p.
        noise: >= 0, the root-mean-square norm of each patch's noise vector (sigma = noise / sqrt(d)).
        feature_noise: gamma >= 0, the strength of the distractor on each noise patch (needs C >= 2 when > 0).
        hard: in [0, 1], the probability that a sample is hard.
        hard_scale: kappa in [0, 1], the factor on a hard sample's common feature (0 removes it).
        fine_probability: in [0, 1], the probability that an easy sample carries its fine feature.
        class_probs: None (uniform), or the probabilities of the fine classes, shape (C, k), summing to 1.
        instances: None for one data set, or the size I (>= 1) of a leading instances axis.
        dtype: torch.float32 or torch.float64, for x.

    Returns:
        :class:`MultiViewData` ``(x, fine, coarse, is_hard, has_fine)``: x of shape (n, P, d) and labels and
        masks of shape (n,), or (I, n, P, d) and (I, n) with ``instances=I``.

    Raises:
        ConfigError: an argument out of range (named in the message), P_c + P_f > P, ``feature_noise`` > 0
            with a single superclass, bad ``class_probs``, ``dtype`` or generator.
    """
    if not isinstance(features, MultiViewFeatures):
        raise ConfigError(f"features must be a MultiViewFeatures, got {type(features).__name__}")
    n = check_int(n, "n", low=1)
    I = 1 if instances is None else check_int(instances, "instances", low=1)
    P = check_int(patches, "patches", low=1)
    P_c = check_int(common_patches, "common_patches", low=0, high=P)
    P_f = check_int(fine_patches, "fine_patches", low=0, high=P)
    if P_c + P_f > P:
        raise ConfigError(
            f"common_patches + fine_patches must be <= patches = {P}, got {P_c} + {P_f} = {P_c + P_f}"
        )
    alpha = check_real(common_strength, "common_strength", low=0.0)
    beta = check_real(fine_strength, "fine_strength", low=0.0)
    delta = check_real(strength_spread, "strength_spread", low=0.0, high=1.0)
    noise = check_real(noise, "noise", low=0.0)
    gamma = check_real(feature_noise, "feature_noise", low=0.0)
    hard = check_real(hard, "hard", low=0.0, high=1.0)
    kappa = check_real(hard_scale, "hard_scale", low=0.0, high=1.0)
    rho = check_real(fine_probability, "fine_probability", low=0.0, high=1.0)
    C, k, d = features.n_superclasses, features.n_subclasses, features.dim
    if gamma > 0 and C < 2:
        raise ConfigError("feature_noise must be 0 with a single superclass (distractors come from other superclasses)")
    cdf = _class_cdf(class_probs, C, k)
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")

    # draws (fixed order and shapes; see the docstring)
    u_class = _uniform((I, n), generator)
    u_hard = _uniform((I, n), generator)
    u_fine = _uniform((I, n), generator)
    u_position = _uniform((I, n, P), generator)
    u_strength = _uniform((I, n, P), generator)
    u_distractor = _uniform((I, n, P), generator)
    xi = standard_normal((I, n, P, d), generator)

    n_fine = C * k
    if cdf is None:
        fine = torch.clamp((u_class * n_fine).to(torch.int64), max=n_fine - 1)
    else:
        fine = torch.clamp(torch.searchsorted(cdf, u_class, right=True), max=n_fine - 1)
    coarse = fine // k
    is_hard = u_hard < hard
    has_fine = is_hard | (u_fine < rho)

    # patch roles: rank r of each patch under a uniformly random permutation; r < P_c common,
    # P_c <= r < P_c + P_f fine, the rest noise.
    rank = torch.argsort(torch.argsort(u_position, dim=-1), dim=-1)
    is_common = rank < P_c
    is_fine = (rank >= P_c) & (rank < P_c + P_f)
    spread = 1.0 + delta * (2.0 * u_strength - 1.0)

    # distractor row: feature r of the (C - 1)(1 + k) features outside the sample's superclass
    c_patch = coarse[..., None].expand(I, n, P)
    if C >= 2:
        r = torch.clamp((u_distractor * ((C - 1) * (1 + k))).to(torch.int64), max=(C - 1) * (1 + k) - 1)
        other = r // (1 + k)
        other = other + (other >= c_patch).to(torch.int64)
        within = r % (1 + k)
        distractor_row = torch.where(within == 0, other, C + other * k + within - 1)
    else:
        distractor_row = torch.zeros_like(c_patch)

    one = torch.ones((), dtype=torch.float64)
    common_coef = alpha * torch.where(is_hard, kappa * one, one)[..., None] * spread
    fine_coef = beta * torch.where(has_fine, one, 0.0 * one)[..., None] * spread
    coef = torch.where(is_common, common_coef, torch.where(is_fine, fine_coef, torch.full_like(spread, gamma)))
    row = torch.where(is_common, c_patch, torch.where(is_fine, C + fine[..., None], distractor_row))

    x = xi.mul_(noise / math.sqrt(d))
    x.add_(coef[..., None] * features.dictionary[row])
    out = MultiViewData(x.to(dtype), fine, coarse, is_hard, has_fine)
    if instances is None:
        out = MultiViewData(*(t[0] for t in out))
    return out


# --------------------------------------------------------------------------------------------------
# label functions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LabelMap:
    """A label function of the fine classes: fine class f -> ``mapping[f]`` in [0, ``n_classes``).

    Attributes:
        mapping: shape (C k,), int64, read-only; every new class has at least one fine class.
        n_classes: the number of new classes.
        kind: how it was built, one of :data:`LABEL_MAPS` (or any name for a user-built map).

    Raises:
        DataError: (on construction) ``mapping`` is not a 1-D array of integers in [0, n_classes) that uses
            every class.
        ConfigError: ``n_classes`` < 1.
    """

    mapping: np.ndarray
    n_classes: int
    kind: str = "custom"

    def __post_init__(self) -> None:
        n_classes = check_int(self.n_classes, "n_classes", low=1)
        mapping = check_labels(self.mapping, n_classes, "mapping")
        if mapping.size == 0:
            raise DataError("mapping: needs at least one fine class")
        unused = np.setdiff1d(np.arange(n_classes), mapping)
        if unused.size:
            raise DataError(f"mapping: class {int(unused[0])} has no fine class (every class must be used)")
        mapping = mapping.copy()
        mapping.setflags(write=False)
        object.__setattr__(self, "mapping", mapping)
        object.__setattr__(self, "n_classes", n_classes)
        object.__setattr__(self, "kind", str(self.kind))

    @property
    def n_fine(self) -> int:
        """C k, the number of fine classes it maps."""
        return int(self.mapping.shape[0])

    @overload
    def __call__(self, fine_labels: torch.Tensor) -> torch.Tensor: ...
    @overload
    def __call__(self, fine_labels: np.ndarray) -> np.ndarray: ...

    def __call__(self, fine_labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Relabel fine labels of any shape: ``mapping[fine_labels]``, int64, a tensor for a tensor.

        Raises:
            DataError: a label outside [0, C k) or not an integer.
        """
        is_tensor = isinstance(fine_labels, torch.Tensor)
        arr = fine_labels.detach().cpu().numpy() if is_tensor else np.asarray(fine_labels)
        flat = check_labels(arr.reshape(-1), self.n_fine, "fine labels")
        out = self.mapping[flat].reshape(arr.shape)
        return torch.from_numpy(out) if is_tensor else out

    def is_aligned_with(self, fine_to_coarse: torch.Tensor | np.ndarray) -> bool:
        """True when every new class lies within one coarse class (the map refines the hierarchy).

        Args:
            fine_to_coarse: the hierarchy, shape (C k,) (e.g. :attr:`MultiViewFeatures.fine_to_coarse`).

        Raises:
            DataError: ``fine_to_coarse`` is not a 1-D integer array of length C k.
        """
        parent = check_labels(fine_to_coarse, None, "fine_to_coarse")
        if parent.shape != self.mapping.shape:
            raise DataError(f"fine_to_coarse must have length {self.n_fine}, got {parent.shape[0]}")
        pairs = np.unique(np.stack([self.mapping, parent]), axis=1)
        return int(pairs.shape[1]) == self.n_classes


def _check_hierarchy(n_superclasses: int, n_subclasses: int) -> tuple[int, int]:
    return (
        check_int(n_superclasses, "n_superclasses", low=1),
        check_int(n_subclasses, "n_subclasses", low=1),
    )


def _subclass_order(C: int, k: int, generator: RandomSource | None) -> np.ndarray:
    """order[c, t] = the subclass j at position t within superclass c: identity, or a random permutation
    per superclass (argsort of C k uniforms) when a generator is given."""
    if generator is None:
        return np.tile(np.arange(k, dtype=np.int64), (C, 1))
    return torch.argsort(_uniform((C, k), generator), dim=1).numpy().astype(np.int64)


def fine_label_map(n_superclasses: int, n_subclasses: int) -> LabelMap:
    """The fine labels: the identity f -> f on C k classes.

    Raises:
        ConfigError: C or k < 1.
    """
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    return LabelMap(np.arange(C * k, dtype=np.int64), C * k, "fine")


def coarse_label_map(n_superclasses: int, n_subclasses: int) -> LabelMap:
    """The coarse labels: f = c k + j -> c on C classes.

    Raises:
        ConfigError: C or k < 1.
    """
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    return LabelMap(np.arange(C * k, dtype=np.int64) // k, C, "coarse")


def aligned_label_map(
    n_superclasses: int, n_subclasses: int, n_classes: int, *, generator: RandomSource | None = None
) -> LabelMap:
    """A clustering aligned with the hierarchy: subclasses grouped within each superclass into ``n_classes``.

    Superclass c gets m_c = floor(n/C) + [c < n mod C] groups (n = ``n_classes``, so the m_c differ by at
    most one and sum to n); its subclasses, in the order j = 0..k-1 (or a random order per superclass when
    a generator is given), are cut into m_c contiguous blocks of sizes differing by at most one:
    subclass at position t goes to group floor(t m_c / k). Labels are numbered superclass by superclass
    (superclass c's groups are sum_{c' < c} m_{c'} + 0..m_c - 1). Every class lies within one superclass;
    n = C k gives the fine labels, n = C the coarse ones, and C < n < C k the granularities in between.
    (Stands in for the k-means clustering within each superclass of Hong et al. 2024; with orthonormal
    features no clustering is preferred, so the partition is a rule.)

    Draws: C k uniforms, only when a generator is given.

    Raises:
        ConfigError: C or k < 1, or n_classes outside [C, C k].
    """
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    n = check_int(n_classes, "n_classes", low=C, high=C * k)
    order = _subclass_order(C, k, generator)
    m = n // C + (np.arange(C) < n % C).astype(np.int64)  # groups per superclass
    offset = np.concatenate([[0], np.cumsum(m)[:-1]])
    mapping = np.empty(C * k, dtype=np.int64)
    for c in range(C):
        mapping[c * k + order[c]] = offset[c] + _balanced_groups(k, int(m[c]))
    return LabelMap(mapping, n, "aligned")


def global_label_map(
    n_superclasses: int, n_subclasses: int, n_classes: int, *, generator: RandomSource | None = None
) -> LabelMap:
    """A clustering across superclasses: the fine classes, interleaved, cut into ``n_classes`` blocks.

    The fine classes are listed subclass-major and superclass-minor, (j=0, c=0), (j=0, c=1), ...,
    (j=0, c=C-1), (j=1, c=0), ... (with the subclasses of each superclass in a random order when a generator
    is given), and the list is cut into n = ``n_classes`` contiguous blocks of sizes differing by at most
    one: position t goes to class floor(t n / (C k)). Any C consecutive entries cover every superclass, and
    any 2 cover two, so (C >= 2):

        n <= k:        every class contains fine classes of every superclass;
        n <= C k / 2:  every class mixes at least two superclasses (none is aligned with the hierarchy).

    (Stands in for the k-means clustering of the whole data set of Hong et al. 2024, which ignores the
    hierarchy; ours is the extreme, maximally misaligned case.)

    Draws: C k uniforms, only when a generator is given.

    Raises:
        ConfigError: C or k < 1, or n_classes outside [1, C k].
    """
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    n = check_int(n_classes, "n_classes", low=1, high=C * k)
    order = _subclass_order(C, k, generator)  # (C, k)
    listed = (np.arange(C)[None, :] * k + order.T).reshape(-1)  # fine class at position t = j_pos * C + c
    mapping = np.empty(C * k, dtype=np.int64)
    mapping[listed] = _balanced_groups(C * k, n)
    return LabelMap(mapping, n, "global")


def random_label_map(
    n_superclasses: int, n_subclasses: int, n_classes: int, *, generator: RandomSource
) -> LabelMap:
    """A random relabelling: a fixed, seeded, balanced random partition of the C k fine classes into
    ``n_classes`` classes (each class gets floor or ceil of C k / n fine classes; the partition is uniform
    among those with the block sizes of position t -> floor(t n / (C k))).

    All samples of one fine class get the same new label (it is a function of the fine class), but the
    classes ignore the hierarchy (Hong et al. 2024's random class assignment).

    Draws: C k uniforms (a random permutation of the fine classes).

    Raises:
        ConfigError: C or k < 1, n_classes outside [1, C k], or a bad generator.
    """
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    n = check_int(n_classes, "n_classes", low=1, high=C * k)
    permutation = torch.argsort(_uniform((C * k,), generator)).numpy()
    mapping = np.empty(C * k, dtype=np.int64)
    mapping[permutation] = _balanced_groups(C * k, n)
    return LabelMap(mapping, n, "random")


def label_map(
    kind: str,
    n_superclasses: int,
    n_subclasses: int,
    *,
    n_classes: int | None = None,
    generator: RandomSource | None = None,
) -> LabelMap:
    """Build a label function by name (one of :data:`LABEL_MAPS`), e.g. from a sweep's config.

        "fine"     identity on C k classes            (n_classes: None or C k; no generator)
        "coarse"   f -> f // k on C classes           (n_classes: None or C;   no generator)
        "aligned"  :func:`aligned_label_map`           (n_classes in [C, C k]; generator optional)
        "global"   :func:`global_label_map`            (n_classes in [1, C k]; generator optional)
        "random"   :func:`random_label_map`            (n_classes in [1, C k]; generator required)

    Raises:
        ConfigError: unknown ``kind``, a missing or inconsistent ``n_classes``, a missing generator for
            "random", or the errors of the function it calls.
    """
    check_choice(kind, "kind", LABEL_MAPS)
    C, k = _check_hierarchy(n_superclasses, n_subclasses)
    if kind in ("fine", "coarse"):
        built = fine_label_map(C, k) if kind == "fine" else coarse_label_map(C, k)
        if n_classes is not None and n_classes != built.n_classes:
            raise ConfigError(f"n_classes must be None or {built.n_classes} for {kind!r} labels, got {n_classes!r}")
        return built
    if n_classes is None:
        raise ConfigError(f"n_classes is required for {kind!r} labels")
    if kind == "aligned":
        return aligned_label_map(C, k, n_classes, generator=generator)
    if kind == "global":
        return global_label_map(C, k, n_classes, generator=generator)
    if generator is None:
        raise ConfigError("generator is required for 'random' labels")
    return random_label_map(C, k, n_classes, generator=generator)
