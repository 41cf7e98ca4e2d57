"""Hierarchical multi-view data: the dictionary is orthonormal, every patch carries exactly the documented
feature at the documented strength, hard samples scale the common feature by the knob, class and hard
frequencies match their probabilities, and the label maps have the stated structure.

Monte-Carlo checks state n and compare against 4 standard errors (SE) of the estimate; every draw is seeded,
so the tests are deterministic. Noise-free samples are exact to float64 rounding (EXACT).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.tasks import (
    LABEL_MAPS,
    LabelMap,
    MultiViewFeatures,
    aligned_label_map,
    coarse_label_map,
    fine_label_map,
    global_label_map,
    label_map,
    multiview_data,
    multiview_features,
    random_label_map,
)

EXACT = 1e-12  # float64 rounding on inner products of a few hundred terms
C, K, D = 3, 4, 40  # 3 superclasses x 4 subclasses; dictionary of 15 features in R^40


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def feats() -> MultiViewFeatures:
    return multiview_features(C, K, D, generator=gen(0))


def projections(features: MultiViewFeatures, x: torch.Tensor) -> torch.Tensor:
    """<x_p, v> for every patch and dictionary row: (..., P, C (1 + k)), float64."""
    return x.to(torch.float64) @ features.dictionary.T


def roles(features: MultiViewFeatures, data, **knobs) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch roles of ``data`` recovered from a noise-free redraw with the same seed: common / fine masks."""
    clean = multiview_data(features, data.x.shape[0], gen(knobs.pop("seed")), noise=0.0, hard=0.0,
                           fine_probability=1.0, feature_noise=0.0, **knobs)  # fmt: skip
    proj = projections(features, clean.x)
    common = proj[..., : features.n_superclasses].abs().sum(-1) > 0.5
    fine = proj[..., features.n_superclasses :].abs().sum(-1) > 0.5
    return common, fine


# --------------------------------------------------------------------------------------------------
# the dictionary
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_super", "n_sub", "d"), [(3, 4, 40), (2, 8, 18), (1, 1, 2), (5, 2, 15)])
def test_dictionary_is_orthonormal_with_the_documented_layout(n_super, n_sub, d):
    f = multiview_features(n_super, n_sub, d, generator=gen(1))
    M = n_super * (1 + n_sub)
    assert f.common.shape == (n_super, d) and f.fine.shape == (n_super, n_sub, d)
    assert (f.n_superclasses, f.n_subclasses, f.n_fine, f.dim) == (n_super, n_sub, n_super * n_sub, d)
    V = f.dictionary
    assert V.shape == (M, d) and V.dtype == torch.float64
    assert torch.allclose(V @ V.T, torch.eye(M, dtype=torch.float64), rtol=0, atol=EXACT)
    assert torch.equal(V[:n_super], f.common)
    assert torch.equal(V[n_super:].reshape(n_super, n_sub, d), f.fine)  # row C + c k + j is v_{c,j}
    assert torch.equal(f.fine_to_coarse, torch.arange(n_super * n_sub) // n_sub)
    h = f.label_hierarchy()
    assert h.n_fine == n_super * n_sub and h.n_coarse == n_super


def test_dictionary_is_seeded_and_numpy_generators_work():
    a = multiview_features(C, K, D, generator=gen(5))
    b = multiview_features(C, K, D, generator=gen(5))
    c = multiview_features(C, K, D, generator=gen(6))
    assert torch.equal(a.dictionary, b.dictionary) and not torch.equal(a.dictionary, c.dictionary)
    n1 = multiview_features(C, K, D, generator=np.random.default_rng(3))
    n2 = multiview_features(C, K, D, generator=np.random.default_rng(3))
    assert torch.equal(n1.dictionary, n2.dictionary)


def test_dictionary_rejects_too_small_d_and_non_orthonormal_features():
    with pytest.raises(ConfigError, match=r"d must be an integer >= 15 \(n_superclasses \* \(1 \+ n_subclasses\)"):
        multiview_features(3, 4, 14, generator=gen())
    for bad in ({"n_superclasses": 0}, {"n_subclasses": 0}, {"n_subclasses": 2.0}):
        args = {"n_superclasses": 2, "n_subclasses": 2, **bad}
        with pytest.raises(ConfigError, match=next(iter(bad))):
            multiview_features(args["n_superclasses"], args["n_subclasses"], 10, generator=gen())
    with pytest.raises(ConfigError, match="generator"):
        multiview_features(2, 2, 10, generator=0)  # type: ignore[arg-type]
    f = multiview_features(2, 2, 10, generator=gen())
    with pytest.raises(DataError, match="orthonormal"):
        MultiViewFeatures(common=2 * f.common, fine=f.fine)
    narrow = MultiViewFeatures(common=f.common.float(), fine=f.fine.float())  # float32 passes at 1e-5
    assert torch.allclose(narrow.dictionary, f.dictionary, rtol=0, atol=1e-7)
    with pytest.raises(DataError, match=r"\(C, k, d\)"):
        MultiViewFeatures(common=f.common, fine=f.fine[:1])


# --------------------------------------------------------------------------------------------------
# patch contents
# --------------------------------------------------------------------------------------------------


def test_noise_free_patches_carry_exactly_the_documented_features(feats):
    """noise = 0, distractors gamma = 0.1: every patch's projections on the dictionary are exactly alpha on
    v_c (P_c patches), beta on v_{c,j} (P_f patches), gamma on one feature of another superclass (the rest),
    and 0 elsewhere; no patch has a component outside the span of the dictionary."""
    alpha, beta, gamma, P, P_c, P_f = 1.5, 0.7, 0.1, 10, 3, 2
    data = multiview_data(feats, 300, gen(2), patches=P, common_patches=P_c, fine_patches=P_f,
                          common_strength=alpha, fine_strength=beta, noise=0.0, feature_noise=gamma,
                          dtype=torch.float64)  # fmt: skip
    assert data.x.shape == (300, P, D) and data.x.dtype == torch.float64
    proj = projections(feats, data.x)  # (n, P, 15)
    assert torch.allclose(proj @ feats.dictionary, data.x, rtol=0, atol=EXACT)  # in the span
    n = torch.arange(300)
    on_common = proj[n, :, data.coarse]  # (n, P)
    on_fine = proj[n, :, C + data.fine]
    common, fine = on_common > 0.5, on_fine > 0.5
    assert torch.equal(common.sum(1), torch.full((300,), P_c)) and torch.equal(fine.sum(1), torch.full((300,), P_f))
    assert torch.allclose(on_common[common], torch.tensor(alpha, dtype=torch.float64), rtol=0, atol=EXACT)
    assert torch.allclose(on_fine[fine], torch.tensor(beta, dtype=torch.float64), rtol=0, atol=EXACT)
    # exactly one nonzero projection per patch; on noise patches it is gamma on another superclass's feature
    nonzero = proj.abs() > EXACT
    assert torch.equal(nonzero.sum(-1), torch.ones(300, P, dtype=torch.int64))
    noise_patch = ~(common | fine)
    row = proj.abs().argmax(-1)
    assert torch.allclose(proj.amax(-1)[noise_patch], torch.tensor(gamma, dtype=torch.float64), rtol=0, atol=EXACT)
    owner = torch.where(row < C, row, (row - C) // K)  # superclass of the distractor row
    assert not bool((owner == data.coarse[:, None])[noise_patch].any())
    assert set(row[noise_patch].tolist()) == set(range(C + C * K))  # every feature serves as a distractor
    # patch positions are random: each position holds a common patch about P_c / P of the time (4 SE)
    share = common.double().mean(0)
    se = math.sqrt(P_c / P * (1 - P_c / P) / 300)
    assert bool(((share - P_c / P).abs() < 4 * se).all())


def test_noise_is_isotropic_gaussian_with_the_documented_norm(feats):
    """Same seed with and without noise: the difference is sigma xi with sigma = noise / sqrt(d). Its projections
    on the 15 orthonormal features are N(0, sigma^2): all within 6 sigma (n P 15 = 90000 values), mean square
    sigma^2 within 4 SE; the mean squared norm of a patch's noise is noise^2 within 4 SE."""
    noise, n, P = 0.5, 600, 10
    sigma = noise / math.sqrt(D)
    noisy = multiview_data(feats, n, gen(3), patches=P, noise=noise, dtype=torch.float64)
    clean = multiview_data(feats, n, gen(3), patches=P, noise=0.0, dtype=torch.float64)
    for field in ("fine", "coarse", "is_hard", "has_fine"):
        assert torch.equal(getattr(noisy, field), getattr(clean, field))
    z = projections(feats, noisy.x - clean.x).flatten() / sigma
    assert float(z.abs().max()) < 6.0
    assert abs(float((z**2).mean()) - 1.0) < 4 * math.sqrt(2 / z.numel())
    sq = ((noisy.x - clean.x) ** 2).sum(-1).flatten()  # noise^2 chi^2_d / d: SE noise^2 sqrt(2 / d) / sqrt(n P)
    assert abs(float(sq.mean()) - noise**2) < 4 * noise**2 * math.sqrt(2 / D) / math.sqrt(sq.numel())
    # the noisy projections recover the features to within 6 sigma
    proj = projections(feats, noisy.x)
    truth = projections(feats, clean.x)
    assert float((proj - truth).abs().max()) < 6 * sigma


def test_strength_spread_is_uniform_in_the_documented_interval(feats):
    """a_p ~ U[1 - delta, 1 + delta]: projections alpha a_p lie in alpha [1 - delta, 1 + delta], with mean
    alpha and variance alpha^2 delta^2 / 3 (4 SE; n P_c = 2000 values)."""
    alpha, delta = 2.0, 0.25
    data = multiview_data(feats, 500, gen(4), common_strength=alpha, strength_spread=delta, noise=0.0,
                          dtype=torch.float64)  # fmt: skip
    proj = projections(feats, data.x)
    values = proj[torch.arange(500), :, data.coarse]
    values = values[values > 1e-9]
    assert values.numel() == 500 * 4
    assert float(values.min()) >= alpha * (1 - delta) - EXACT and float(values.max()) <= alpha * (1 + delta) + EXACT
    N, half = values.numel(), alpha * delta  # U[alpha - half, alpha + half]: variance half^2 / 3, mu_4 = half^4 / 5
    assert abs(float(values.mean()) - alpha) < 4 * half / math.sqrt(3 * N)
    assert abs(float(values.var()) - half**2 / 3) < 4 * half**2 * math.sqrt((1 / 5 - 1 / 9) / N)


# --------------------------------------------------------------------------------------------------
# easy and hard samples, rare fine features
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0.0, 0.3, 1.0])
def test_hard_samples_scale_the_common_feature_by_the_knob(feats, kappa):
    alpha, beta = 1.2, 0.8
    kw = {"common_strength": alpha, "fine_strength": beta, "noise": 0.0, "dtype": torch.float64}
    data = multiview_data(feats, 400, gen(5), hard=0.5, hard_scale=kappa, fine_probability=0.0, **kw)
    common, fine = roles(feats, data, seed=5)
    proj = projections(feats, data.x)
    n = torch.arange(400)
    on_common, on_fine = proj[n, :, data.coarse], proj[n, :, C + data.fine]
    hard, easy = data.is_hard, ~data.is_hard
    expected = torch.full((400, 16), alpha, dtype=torch.float64)
    expected[hard] = kappa * alpha
    assert torch.allclose(on_common[common], expected[common], rtol=0, atol=EXACT)
    # hard samples always carry the fine feature; easy ones never do here (fine_probability = 0)
    assert torch.equal(data.has_fine, hard)
    assert torch.allclose(on_fine[fine & hard[:, None]], torch.tensor(beta, dtype=torch.float64), rtol=0, atol=EXACT)
    assert float(on_fine[fine & easy[:, None]].abs().max()) < EXACT
    if kappa == 0.0:  # the common feature is gone: no projection on any common feature
        assert float(proj[hard][..., :C].abs().max()) < EXACT


def test_hard_and_fine_frequencies_and_common_random_numbers(feats):
    """P(hard) = h and P(has_fine | easy) = rho within 4 SE (n = 4000); one seed, raising h only adds hard
    samples and leaves the classes unchanged."""
    n, h, rho = 4000, 0.3, 0.6
    data = multiview_data(feats, n, gen(6), patches=4, common_patches=1, fine_patches=1, hard=h, fine_probability=rho)
    assert abs(float(data.is_hard.double().mean()) - h) < 4 * math.sqrt(h * (1 - h) / n)
    easy = ~data.is_hard
    m = int(easy.sum())
    assert abs(float(data.has_fine[easy].double().mean()) - rho) < 4 * math.sqrt(rho * (1 - rho) / m)
    more = multiview_data(feats, n, gen(6), patches=4, common_patches=1, fine_patches=1, hard=0.7, fine_probability=rho)
    assert torch.equal(more.fine, data.fine)
    assert bool((more.is_hard | ~data.is_hard).all())  # hard at 0.3 => hard at 0.7
    assert bool(multiview_data(feats, 50, gen(), hard=1.0).is_hard.all())
    assert not bool(multiview_data(feats, 50, gen(), hard=0.0).is_hard.any())


# --------------------------------------------------------------------------------------------------
# class frequencies
# --------------------------------------------------------------------------------------------------


def test_classes_are_uniform_and_coarse_follows_the_hierarchy(feats):
    n = 6000
    data = multiview_data(feats, n, gen(7), patches=2, common_patches=1, fine_patches=1)
    assert data.fine.dtype == torch.int64 and data.coarse.dtype == torch.int64
    assert torch.equal(data.coarse, data.fine // K)
    counts = torch.bincount(data.fine, minlength=C * K).double()
    p = 1 / (C * K)
    assert bool(((counts / n - p).abs() < 4 * math.sqrt(p * (1 - p) / n)).all())


def test_class_probs_set_the_fine_and_coarse_frequencies(feats):
    probs = np.array([[0.4, 0.1, 0.0, 0.1], [0.05, 0.05, 0.05, 0.05], [0.1, 0.0, 0.0, 0.1]])
    n = 6000
    data = multiview_data(feats, n, gen(8), patches=2, common_patches=1, fine_patches=1, class_probs=probs)
    freq = torch.bincount(data.fine, minlength=C * K).double().numpy() / n
    p = probs.reshape(-1)
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n))
    assert np.all(freq[p == 0] == 0)  # impossible classes never appear
    coarse = torch.bincount(data.coarse, minlength=C).double().numpy() / n
    pc = probs.sum(1)
    assert np.all(np.abs(coarse - pc) < 4 * np.sqrt(pc * (1 - pc) / n))


# --------------------------------------------------------------------------------------------------
# determinism, dtypes, instances
# --------------------------------------------------------------------------------------------------


def test_data_are_seeded_in_both_dtypes_and_with_numpy_generators(feats):
    a = multiview_data(feats, 50, gen(9), noise=0.3, strength_spread=0.2, hard=0.4, feature_noise=0.05)
    b = multiview_data(feats, 50, gen(9), noise=0.3, strength_spread=0.2, hard=0.4, feature_noise=0.05)
    c = multiview_data(feats, 50, gen(10), noise=0.3, strength_spread=0.2, hard=0.4, feature_noise=0.05)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a.x, c.x)
    wide = multiview_data(feats, 50, gen(9), noise=0.3, strength_spread=0.2, hard=0.4, feature_noise=0.05,
                          dtype=torch.float64)  # fmt: skip
    assert a.x.dtype == torch.float32 and wide.x.dtype == torch.float64
    assert torch.equal(wide.x.to(torch.float32), a.x) and torch.equal(wide.fine, a.fine)
    n1 = multiview_data(feats, 30, np.random.default_rng(1))
    n2 = multiview_data(feats, 30, np.random.default_rng(1))
    assert all(torch.equal(u, v) for u, v in zip(n1, n2))


def test_instances_axis(feats):
    data = multiview_data(feats, 20, gen(11), instances=3, patches=5, common_patches=2, fine_patches=2)
    assert data.x.shape == (3, 20, 5, D)
    assert all(t.shape == (3, 20) for t in data[1:])
    assert not torch.equal(data.x[0], data.x[1])
    single = multiview_data(feats, 20, gen(11), instances=1, patches=5, common_patches=2, fine_patches=2)
    plain = multiview_data(feats, 20, gen(11), patches=5, common_patches=2, fine_patches=2)
    assert all(torch.equal(s[0], p) for s, p in zip(single, plain))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"patches": 0}, "patches"),
        ({"common_patches": -1}, "common_patches"),
        ({"fine_patches": 17}, "fine_patches"),
        ({"common_patches": 10, "fine_patches": 7}, "common_patches \\+ fine_patches"),
        ({"common_strength": -0.1}, "common_strength"),
        ({"fine_strength": float("nan")}, "fine_strength"),
        ({"strength_spread": 1.5}, "strength_spread"),
        ({"noise": float("inf")}, "noise"),
        ({"feature_noise": -1.0}, "feature_noise"),
        ({"hard": 1.1}, "hard"),
        ({"hard_scale": -0.5}, "hard_scale"),
        ({"fine_probability": 2}, "fine_probability"),
        ({"class_probs": np.ones((2, 2)) / 4}, "class_probs"),
        ({"class_probs": np.full((C, K), 0.1)}, "class_probs must sum to 1"),
        ({"class_probs": -np.eye(C, K)}, "class_probs must be finite and >= 0"),
        ({"instances": 0}, "instances"),
        ({"dtype": torch.int64}, "dtype"),
        ({"generator": "seed"}, "generator"),
        ({"features": "dictionary"}, "features"),
    ],
)
def test_bad_data_arguments_raise_config_error_naming_them(feats, kwargs, name):
    args = {"features": feats, "n": 10, "generator": gen()} | kwargs
    with pytest.raises(ConfigError, match=name):
        multiview_data(args.pop("features"), args.pop("n"), args.pop("generator"), **args)


def test_distractors_need_another_superclass():
    one = multiview_features(1, 3, 8, generator=gen())
    with pytest.raises(ConfigError, match="feature_noise"):
        multiview_data(one, 5, gen(), feature_noise=0.1)
    assert multiview_data(one, 5, gen()).coarse.eq(0).all()


# --------------------------------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------------------------------


def test_fine_is_the_identity_and_coarse_is_the_hierarchy(feats):
    fine, coarse = fine_label_map(C, K), coarse_label_map(C, K)
    assert (fine.n_classes, coarse.n_classes, fine.kind, coarse.kind) == (C * K, C, "fine", "coarse")
    assert np.array_equal(fine.mapping, np.arange(C * K))
    assert np.array_equal(coarse.mapping, feats.fine_to_coarse.numpy())
    data = multiview_data(feats, 40, gen(), patches=2, common_patches=1, fine_patches=1)
    assert torch.equal(fine(data.fine), data.fine) and torch.equal(coarse(data.fine), data.coarse)
    assert np.array_equal(coarse(data.fine.numpy()), data.coarse.numpy())
    assert fine.is_aligned_with(feats.fine_to_coarse) and coarse.is_aligned_with(feats.fine_to_coarse)
    with pytest.raises(DataError, match="fine labels"):
        coarse(torch.tensor([0, C * K]))
    with pytest.raises(ConfigError, match="n_subclasses"):
        fine_label_map(C, 0)


@pytest.mark.parametrize(("n_super", "n_sub"), [(3, 4), (2, 8), (4, 5)])
def test_aligned_clusterings_never_mix_superclasses_and_interpolate_fine_to_coarse(n_super, n_sub):
    parent = np.arange(n_super * n_sub) // n_sub
    assert np.array_equal(aligned_label_map(n_super, n_sub, n_super * n_sub).mapping, np.arange(n_super * n_sub))
    assert np.array_equal(aligned_label_map(n_super, n_sub, n_super).mapping, parent)
    for n in range(n_super, n_super * n_sub + 1):
        for g in (None, gen(n)):
            m = aligned_label_map(n_super, n_sub, n, generator=g)
            assert m.n_classes == n and m.kind == "aligned"
            assert m.is_aligned_with(parent)
            sizes = np.bincount(m.mapping, minlength=n)
            assert sizes.min() >= 1
            groups = np.bincount(np.unique(np.stack([m.mapping, parent]), axis=1)[1], minlength=n_super)
            assert groups.max() - groups.min() <= 1  # groups spread evenly over the superclasses
            for c in range(n_super):  # within a superclass, group sizes differ by at most one
                s = sizes[np.unique(m.mapping[parent == c])]
                assert s.max() - s.min() <= 1


@pytest.mark.parametrize(("n_super", "n_sub"), [(3, 4), (2, 8), (4, 5)])
def test_global_clusterings_cut_across_superclasses(n_super, n_sub):
    parent = np.arange(n_super * n_sub) // n_sub
    for n in range(1, n_super * n_sub + 1):
        for g in (None, gen(n)):
            m = global_label_map(n_super, n_sub, n, generator=g)
            sizes = np.bincount(m.mapping, minlength=n)
            assert m.n_classes == n and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
            supers_per_class = np.bincount(np.unique(np.stack([m.mapping, parent]), axis=1)[0], minlength=n)
            if n <= n_sub:
                assert np.all(supers_per_class == n_super)  # every class holds every superclass
            if n <= n_super * n_sub // 2:
                assert np.all(supers_per_class >= 2)
                assert not m.is_aligned_with(parent)


def test_random_relabelling_is_a_seeded_balanced_function_of_the_fine_class(feats):
    a = random_label_map(C, K, 5, generator=gen(12))
    b = random_label_map(C, K, 5, generator=gen(12))
    c = random_label_map(C, K, 5, generator=gen(13))
    assert np.array_equal(a.mapping, b.mapping) and not np.array_equal(a.mapping, c.mapping)
    sizes = np.bincount(a.mapping, minlength=5)
    assert sizes.sum() == C * K and sizes.min() >= 2 and sizes.max() <= 3
    data = multiview_data(feats, 200, gen(), patches=2, common_patches=1, fine_patches=1)
    y = a(data.fine)
    for f in range(C * K):  # a function of the fine class: every sample of class f gets mapping[f]
        assert bool((y[data.fine == f] == int(a.mapping[f])).all())
    assert np.array_equal(random_label_map(C, K, 5, generator=np.random.default_rng(0)).mapping,
                          random_label_map(C, K, 5, generator=np.random.default_rng(0)).mapping)  # fmt: skip


def test_label_map_dispatch_and_bad_arguments():
    assert set(LABEL_MAPS) == {"fine", "coarse", "aligned", "global", "random"}
    assert np.array_equal(label_map("fine", C, K).mapping, np.arange(C * K))
    assert label_map("coarse", C, K, n_classes=C).n_classes == C
    assert np.array_equal(label_map("aligned", C, K, n_classes=6).mapping, aligned_label_map(C, K, 6).mapping)
    assert np.array_equal(label_map("global", C, K, n_classes=4).mapping, global_label_map(C, K, 4).mapping)
    assert np.array_equal(
        label_map("random", C, K, n_classes=4, generator=gen(1)).mapping,
        random_label_map(C, K, 4, generator=gen(1)).mapping,
    )
    with pytest.raises(ConfigError, match="kind"):
        label_map("kmeans", C, K, n_classes=3)
    with pytest.raises(ConfigError, match="n_classes"):
        label_map("coarse", C, K, n_classes=5)
    with pytest.raises(ConfigError, match="n_classes is required"):
        label_map("global", C, K)
    with pytest.raises(ConfigError, match="generator is required"):
        label_map("random", C, K, n_classes=3)
    with pytest.raises(ConfigError, match="n_classes"):
        aligned_label_map(C, K, C - 1)  # fewer classes than superclasses cannot stay aligned
    with pytest.raises(ConfigError, match="n_classes"):
        global_label_map(C, K, C * K + 1)
    with pytest.raises(ConfigError, match="n_classes"):
        random_label_map(C, K, 0, generator=gen())
    with pytest.raises(DataError, match="class 2 has no fine class"):
        LabelMap(np.array([0, 1, 1, 3]), 4)
    with pytest.raises(DataError, match="mapping"):
        LabelMap(np.array([0, 5]), 2)
    m = LabelMap(np.array([1, 0, 1]), 2)
    with pytest.raises(ValueError):
        m.mapping[0] = 0  # read-only
