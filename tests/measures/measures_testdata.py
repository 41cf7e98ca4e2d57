"""Generators of small generic inputs for the measures tests (imported by the test modules)."""

from __future__ import annotations

import numpy as np

from transferlab.measures import MeasureInfo


def decaying_columns(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Gaussian data whose column scales decay geometrically (so SVCCA truncation is active)."""
    return rng.standard_normal((n, d)) * np.geomspace(3.0, 0.02, d)


def paired_representations(rng: np.random.Generator, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """X (n, 6) and a related nonlinear representation Y (n, 5) of the same inputs."""
    x = decaying_columns(rng, n, 6) + 1.5
    y = np.tanh(x @ rng.standard_normal((6, 5))) + 0.3 * rng.standard_normal((n, 5))
    return x, y


def two_samples(rng: np.random.Generator, n: int = 50, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two samples from different, anisotropic distributions in the same space."""
    x = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d)
    y = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.8 + 0.7
    return x, y


def labelled_features(rng: np.random.Generator, n: int = 90, d: int = 5, classes: int = 3):
    """Features (n, d) that partly encode labels (n,) in `classes` classes."""
    labels = np.arange(n) % classes
    means = rng.standard_normal((classes, d)) * 1.5
    feats = means[labels] + rng.standard_normal((n, d)) * np.linspace(0.5, 1.5, d) + 0.4
    return feats, labels


def source_predictions(rng: np.random.Generator, n: int = 90, classes: int = 3, source: int = 4):
    labels = np.arange(n) % classes
    logits = rng.standard_normal((n, source)) + 2.0 * np.eye(source)[labels % source]
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), labels


def make_inputs(info: MeasureInfo, seed: int) -> list:
    """Positional arguments for calling ``info.func`` on generic data."""
    rng = np.random.default_rng(seed)
    if info.inputs == "pair" and info.name == "pwcca":
        # PWCCA weights come from the side with fewer features; with equal widths that is X, the
        # case in which its registry entry declares it asymmetric and not rotation invariant.
        x, _ = paired_representations(rng)
        return [x, np.tanh(x @ rng.standard_normal((6, 6))) + 0.3 * rng.standard_normal(x.shape)]
    if info.inputs == "pair":
        return list(paired_representations(rng))
    if info.inputs == "samples":
        return list(two_samples(rng))
    if info.inputs == "single":
        return [rng.standard_normal((200, 3)) @ rng.standard_normal((3, 5))]
    if info.inputs == "features_labels":
        return list(labelled_features(rng))
    return list(source_predictions(rng))


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def transform(kind: str, x: np.ndarray, rng: np.random.Generator):
    """A function applying one random map of the given kind to arrays with ``x.shape[1]`` columns."""
    d = x.shape[1]
    if kind == "orthogonal":
        q = random_orthogonal(rng, d)
        return lambda a: a @ q
    if kind == "isotropic_scaling":
        return lambda a: 3.7 * a
    if kind == "translation":
        t = 5.0 * rng.standard_normal(d)
        return lambda a: a + t
    if kind == "permutation":
        perm = np.roll(np.arange(d), 1)
        return lambda a: a[:, perm]
    if kind == "invertible_linear":
        a_mat = random_orthogonal(rng, d) @ np.diag(np.geomspace(0.2, 5.0, d)) @ random_orthogonal(rng, d)
        a_mat += 0.5 * rng.standard_normal((d, d))  # generic: not a scaled rotation
        return lambda a: a @ a_mat
    raise AssertionError(kind)
