"""NLEEP, GBC and TransRate: each against a slow reference written from its paper's definition (loops,
no code shared with the library), the invariances the definitions promise, bounds, and edge cases.
The registry-driven invariance checks of test_properties.py run on them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from measures_testdata import labelled_features, random_orthogonal
from scipy import stats

from transferlab.cli import main
from transferlab.errors import ConfigError, DataError
from transferlab.measures import class_bhattacharyya_coefficients, gbc_score, nleep_score, transrate_score
from transferlab.measures._gmm import fit_gaussian_mixture, kmeans

# ----------------------------------------------------------------------------- slow references


def ref_pca(f, keep=None, k=None):
    """Principal-component scores from the eigendecomposition of the covariance matrix."""
    fc = f - f.mean(axis=0)
    lam, vec = np.linalg.eigh(np.cov(fc, rowvar=False, bias=True))
    order = np.argsort(lam)[::-1]
    lam, vec = lam[order], vec[:, order]
    if keep is not None:
        ratio = np.cumsum(lam) / np.sum(lam)
        k = next(i + 1 for i in range(len(lam)) if ratio[i] >= keep - 1e-12)
    return fc @ vec[:, : min(k, int(np.sum(lam > 1e-12 * lam[0])))]


def ref_kmeans(x, k, seed):
    """k-means++ seeding (same random draws as documented) and plain Lloyd loops."""
    rng = np.random.default_rng(seed)
    n = len(x)
    centres = [x[int(rng.integers(n))]]
    while len(centres) < k:
        d2 = np.array([min(np.sum((xi - c) ** 2) for c in centres) for xi in x])
        u = rng.uniform(0.0, d2.sum())
        acc, pick = 0.0, n - 1
        for i in range(n):
            acc += d2[i]
            if acc > u:
                pick = i
                break
        centres.append(x[pick])
    labels = None
    for _ in range(300):
        new = np.array([int(np.argmin([np.sum((xi - c) ** 2) for c in centres])) for xi in x])
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        assert all(np.any(labels == j) for j in range(k)), "reference k-means hit an empty cluster"
        centres = [x[labels == j].mean(axis=0) for j in range(k)]
    return labels


def ref_em(x, labels, k, covariance, reg, tol=1e-9, max_iter=5000):
    """EM from one-hot initial responsibilities; densities from scipy.stats, sums written out."""
    n, p = x.shape
    resp = np.zeros((n, k))
    for i in range(n):
        resp[i, labels[i]] = 1.0

    def m_step(resp):
        params = []
        for v in range(k):
            mass = sum(resp[i, v] for i in range(n)) + 10 * np.finfo(float).eps
            mu = sum(resp[i, v] * x[i] for i in range(n)) / mass
            if covariance == "full":
                cov = sum(resp[i, v] * np.outer(x[i] - mu, x[i] - mu) for i in range(n)) / mass + reg * np.eye(p)
            else:
                cov = np.diag(sum(resp[i, v] * (x[i] - mu) ** 2 for i in range(n)) / mass + reg)
            params.append((mass / n, mu, cov))
        return params

    def e_step(params):
        logp = np.column_stack([np.log(w) + stats.multivariate_normal(mu, cov).logpdf(x) for w, mu, cov in params])
        norm = np.array([np.log(np.sum(np.exp(row - row.max()))) + row.max() for row in logp])
        return np.exp(logp - norm[:, None])

    params = m_step(resp)
    for _ in range(max_iter):  # stop when no posterior moves by tol (the documented rule)
        new = e_step(params)
        params = m_step(new)
        done = np.max(np.abs(new - resp)) < tol
        resp = new
        if done:
            break
    return e_step(params)


def ref_leep(post, y):
    classes = sorted(set(y))
    n, k = post.shape
    joint = {(c, v): sum(post[i, v] for i in range(n) if y[i] == c) / n for c in classes for v in range(k)}
    pz = {v: sum(joint[c, v] for c in classes) for v in range(k)}
    return np.mean([np.log(sum(joint[y[i], v] / pz[v] * post[i, v] for v in range(k))) for i in range(n)])


def ref_nleep(f, y, seed=0, covariance="full", keep=0.8, reg_covar=1e-6):
    x = ref_pca(f, keep=keep)
    k = 5 * len(set(y))
    reg = reg_covar * np.mean(np.var(x, axis=0))
    post = ref_em(x, ref_kmeans(x, k, seed), k, covariance, reg)
    return ref_leep(post, list(y))


def ref_bhattacharyya(mu1, mu2, cov1, cov2):
    cov = (cov1 + cov2) / 2
    d = mu1 - mu2
    return d @ np.linalg.inv(cov) @ d / 8 + 0.5 * (
        np.linalg.slogdet(cov)[1] - 0.5 * (np.linalg.slogdet(cov1)[1] + np.linalg.slogdet(cov2)[1]))


def ref_gbc(f, y, gaussian="spherical", k=64):
    x = f if k is None else ref_pca(f, k=k)
    fits = {}
    for c in sorted(set(y)):
        xc = x[y == c]
        var = xc.var(axis=0)
        cov = np.diag(var) if gaussian == "diagonal" else np.eye(x.shape[1]) * var.mean()
        fits[c] = (xc.mean(axis=0), cov)
    total = 0.0
    for a in fits:
        for b in fits:
            if a != b:
                (mu_a, cov_a), (mu_b, cov_b) = fits[a], fits[b]
                total += np.exp(-ref_bhattacharyya(mu_a, mu_b, cov_a, cov_b))
    return -total


def ref_coding_rate(z, eps):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]


def ref_transrate(f, y, eps=None, uniform=False):
    """Huang et al. (2022): R(Z) - R(Z | Y) on centred features; uniform=True is the released code;
    eps=None: 1% of the mean per-feature variance."""
    z = f - f.mean(axis=0)
    if eps is None:
        eps = 0.01 * np.mean([np.var(f[:, j]) for j in range(f.shape[1])])
    classes = sorted(set(y))
    cond = 0.0
    for c in classes:
        w = 1 / len(classes) if uniform else np.mean(y == c)
        cond += w * ref_coding_rate(z[y == c], eps)
    return ref_coding_rate(z, eps) - cond


# ----------------------------------------------------------------------------- NLEEP


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_nleep_matches_slow_reference(covariance):
    f, y = labelled_features(np.random.default_rng(3), 45, 5)
    # Both run EM from the same k-means labels until no posterior moves by 1e-9; stopping one
    # iteration apart moves each posterior by < 1e-9, and the log of a LEEP mixture (>= ~0.01 here)
    # amplifies that by at most ~100.
    assert nleep_score(f, y, covariance=covariance) == pytest.approx(ref_nleep(f, y, covariance=covariance), abs=1e-7)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_matches_scikit_learn_from_the_same_start(rng, covariance):
    """scikit-learn's GaussianMixture (an independent EM) started from our initial parameters and run
    for the same number of iterations gives the same posteriors."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = rng.standard_normal((120, 3)) + np.repeat(rng.standard_normal((3, 3)) * 2, 40, axis=0)
    k, reg, steps = 6, 1e-3, 40
    labels = kmeans(x, k, np.random.default_rng(0)).labels
    members = [x[labels == v] for v in range(k)]
    means = np.array([m.mean(axis=0) for m in members])
    if covariance == "full":
        covs = np.array([np.cov(m, rowvar=False, bias=True) + reg * np.eye(3) for m in members])
        precisions = np.linalg.inv(covs)
    else:
        precisions = 1.0 / np.array([m.var(axis=0) + reg for m in members])
    weights = np.array([len(m) for m in members]) / len(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: exactly `steps` iterations
        skl = GaussianMixture(k, covariance_type=covariance, reg_covar=reg, tol=0.0, max_iter=steps,
                              weights_init=weights, means_init=means, precisions_init=precisions).fit(x)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        ours = fit_gaussian_mixture(x, k, covariance=covariance, seed=0, reg=reg, tol=0.0, max_iter=steps)
    # Same arithmetic in a different order for 40 iterations: roundoff-level differences, 1e-8.
    assert np.allclose(ours.posteriors, skl.predict_proba(x), rtol=0, atol=1e-8)
    assert np.allclose(ours.means, skl.means_, rtol=0, atol=1e-8)


def test_kmeans_matches_reference_and_is_a_lloyd_fixed_point(rng):
    x = rng.standard_normal((80, 3)) + np.repeat(rng.standard_normal((4, 3)) * 3, 20, axis=0)
    labels = kmeans(x, 6, np.random.default_rng(7)).labels
    assert np.array_equal(labels, ref_kmeans(x, 6, 7))
    centres = np.array([x[labels == j].mean(axis=0) for j in range(6)])
    nearest = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(nearest, labels)


def test_em_increases_likelihood_and_recovers_a_separated_mixture(rng):
    truth = np.array([[-4.0, 0.0], [4.0, 1.0]])
    x = np.vstack([truth[0] + 0.5 * rng.standard_normal((300, 2)), truth[1] + rng.standard_normal((300, 2))])
    fit = fit_gaussian_mixture(x, 2, seed=1, reg=1e-6)
    assert fit.converged
    order = np.argsort(fit.means[:, 0])
    # 300 points per component: the MLE of a mean has SE sigma / sqrt(300) <= 0.06; 5 SE = 0.3.
    assert np.allclose(fit.means[order], truth, atol=0.3)
    assert np.allclose(fit.weights, 0.5, atol=0.05)  # SE of a proportion: sqrt(0.25 / 600) = 0.02
    assert np.allclose(fit.covariances[order[0]], 0.25 * np.eye(2), atol=0.1)  # SE of a variance ~ 0.02
    with pytest.warns(RuntimeWarning, match="did not converge"):
        start = fit_gaussian_mixture(x, 2, seed=1, reg=1e-6, max_iter=1, tol=0.0)
    assert fit.log_likelihood >= start.log_likelihood - 1e-12


def test_em_warns_when_not_converged(rng):
    x = rng.standard_normal((60, 2))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fit = fit_gaussian_mixture(x, 4, seed=0, reg=1e-6, max_iter=2, tol=0.0)
    assert not fit.converged and fit.n_iter == 2


def test_nleep_bounds_and_extremes(rng):
    y = np.arange(120) % 3
    tight = np.eye(3)[y] * 10 + 0.01 * rng.standard_normal((120, 3))
    assert nleep_score(tight, y) == pytest.approx(0.0, abs=1e-6)  # every component within one class
    noise = rng.standard_normal((120, 3))
    assert np.log(1 / 3) - 0.3 < nleep_score(noise, y) < -0.5  # label-free features: near log(1/C)


def test_nleep_label_permutation_and_seed(rng):
    f, y = labelled_features(rng, 90, 5)
    relabelled = np.array([7, 2, 5])[y]
    assert nleep_score(f, relabelled) == pytest.approx(nleep_score(f, y), abs=1e-12)
    assert nleep_score(f, y, seed=4) == nleep_score(f, y, seed=4)  # deterministic: exactly repeatable


# ----------------------------------------------------------------------------- GBC


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
@pytest.mark.parametrize("k", [None, 64, 3])
def test_gbc_matches_slow_reference(rng, gaussian, k):
    f, y = labelled_features(rng, 90, 5)
    f = np.hstack([f, 0.3 * rng.standard_normal((90, 2))])
    # Same formula through (C, C, p) arrays vs per-pair matrix inverses: roundoff only.
    assert gbc_score(f, y, gaussian=gaussian, pca_components=k) == pytest.approx(ref_gbc(f, y, gaussian, k), rel=1e-9)


def test_gbc_coefficients_symmetric_bounded_and_label_invariant(rng):
    f, y = labelled_features(rng, 120, 4, classes=4)
    for gaussian in ("spherical", "diagonal"):
        bc = class_bhattacharyya_coefficients(f, y, gaussian=gaussian)
        assert np.allclose(bc, bc.T, rtol=0, atol=1e-15)
        assert np.allclose(np.diag(bc), 1.0, rtol=0, atol=1e-15)
        assert np.all((bc > 0) & (bc <= 1))
        score = gbc_score(f, y, gaussian=gaussian)
        assert -4 * 3 <= score < 0
        assert gbc_score(f, np.array([3, 0, 2, 1])[y], gaussian=gaussian) == pytest.approx(score, rel=1e-12)


def test_gbc_extremes(rng):
    x = rng.standard_normal((50, 3))
    same = np.vstack([x, x, x])  # three classes with identical samples: identical Gaussians
    y = np.repeat([0, 1, 2], 50)
    assert gbc_score(same, y) == pytest.approx(-6.0, rel=1e-12)
    far = x[np.arange(150) % 50] * 0.01 + 100.0 * np.eye(3)[y]
    assert gbc_score(far, y, gaussian="diagonal") == pytest.approx(0.0, abs=1e-12)


def test_gbc_diagonal_needs_the_pca_rotation_for_orthogonal_invariance(rng):
    f, y = labelled_features(rng, 90, 5)
    q = random_orthogonal(rng, 5)
    with_pca = gbc_score(f, y, gaussian="diagonal")
    assert gbc_score(f @ q, y, gaussian="diagonal") == pytest.approx(with_pca, rel=1e-9)
    raw = gbc_score(f, y, gaussian="diagonal", pca_components=None)
    assert abs(gbc_score(f @ q, y, gaussian="diagonal", pca_components=None) - raw) > 1e-3 * abs(raw)


def test_gbc_spherical_uses_the_full_dimensional_determinant():
    """Two 1-class-each spherical Gaussians with equal means and variances 1 and 4 in d dimensions:
    D_B = (d/2) log((1 + 4) / 2 / sqrt(1 * 4)) exactly, so BC = (5/4)^(-d/2)."""
    d, m = 4, 400
    base = np.vstack([np.eye(d), -np.eye(d)]) * np.sqrt(d / 2)  # mean 0, per-feature variance 1
    a = np.tile(base, (m // (2 * d), 1))
    f = np.vstack([a, 2 * a])
    y = np.repeat([0, 1], m)
    bc = class_bhattacharyya_coefficients(f, y, pca_components=None)
    assert bc[0, 1] == pytest.approx((5 / 4) ** (-d / 2), rel=1e-12)


# ----------------------------------------------------------------------------- TransRate


@pytest.mark.parametrize("eps", [None, 1e-4, 0.5])
def test_transrate_matches_slow_reference(rng, eps):
    f, y = labelled_features(rng, 90, 5)
    y = np.where(np.arange(90) < 10, 0, y)  # unbalanced: proportional and uniform weights differ
    # log-determinants via SVD vs slogdet of d x d matrices: roundoff only.
    assert transrate_score(f, y, eps=eps) == pytest.approx(ref_transrate(f, y, eps), rel=1e-9)
    uniform = transrate_score(f, y, eps=eps, class_weights="uniform")
    assert uniform == pytest.approx(ref_transrate(f, y, eps, uniform=True), rel=1e-9)
    assert abs(uniform - transrate_score(f, y, eps=eps)) > 1e-3


def test_transrate_invariances_and_scaling(rng):
    f, y = labelled_features(rng, 90, 6)
    q = random_orthogonal(rng, 6)
    for eps in (None, 1e-3):
        base = transrate_score(f, y, eps=eps)
        # Exact identities evaluated through SVDs of well-conditioned matrices: 1e-9 relative.
        assert transrate_score(f @ q + 3.0, y, eps=eps) == pytest.approx(base, rel=1e-9)
        assert transrate_score(f, np.array([2, 9, 4])[y], eps=eps) == pytest.approx(base, rel=1e-12)
    base = transrate_score(f, y)
    assert transrate_score(2.5 * f, y) == pytest.approx(base, rel=1e-9)  # default eps scales with F
    # A fixed eps: TrR(c F, eps) = TrR(F, eps / c^2), and finer relative distortion codes more nats.
    assert transrate_score(2.5 * f, y, eps=1e-4 * 2.5**2) == pytest.approx(transrate_score(f, y, eps=1e-4), rel=1e-9)
    assert transrate_score(2.5 * f, y, eps=1e-3) > transrate_score(f, y, eps=1e-3)


def test_transrate_nonnegative_and_zero_for_equal_class_scatter(rng):
    for seed in range(3):
        f, y = labelled_features(np.random.default_rng(seed), 60, 4)
        assert transrate_score(f, y) >= 0.0  # concavity of log det (proportional weights)
    z = rng.standard_normal((40, 3))
    # Class 1 is the mirror image of class 0: same second-moment matrix Z_c^T Z_c / n_c as the whole.
    assert transrate_score(np.vstack([z, -z]), np.repeat([0, 1], 40)) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [nleep_score, gbc_score, transrate_score])
def test_single_class_is_a_data_error(rng, fn):
    with pytest.raises(DataError, match="at least 2 classes"):
        fn(rng.standard_normal((40, 3)), np.zeros(40))


@pytest.mark.parametrize("fn", [gbc_score, transrate_score])
def test_singleton_class_is_a_data_error(rng, fn):
    y = np.r_[np.zeros(20), 1]
    with pytest.raises(DataError, match="at least 2 samples per class; class index 1 .* has 1"):
        fn(rng.standard_normal((21, 3)), y)


def test_nleep_too_few_samples_for_its_components(rng):
    with pytest.raises(DataError, match="n >= 40; got n = 30"):
        nleep_score(rng.standard_normal((30, 3)), np.arange(30) % 4)
    assert np.isfinite(nleep_score(rng.standard_normal((30, 3)), np.arange(30) % 4, n_components=4))


def test_constant_features_and_bad_options(rng):
    y = np.arange(30) % 2
    for fn in (nleep_score, gbc_score):
        with pytest.raises(DataError, match="constant"):
            fn(np.ones((30, 3)), y)
    with pytest.raises(ConfigError, match="gaussian"):
        gbc_score(rng.standard_normal((30, 3)), y, gaussian="full")
    with pytest.raises(ConfigError, match="eps"):
        transrate_score(rng.standard_normal((30, 3)), y, eps=0.0)
    with pytest.raises(DataError, match="constant"):
        transrate_score(np.ones((30, 3)), y)
    with pytest.raises(ConfigError, match="variance_kept"):
        nleep_score(rng.standard_normal((30, 3)), y, variance_kept=1.5)


def test_cli_measure_new_predictors(tmp_path, rng, capsys):
    f, y = labelled_features(rng, 60, 4)
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "one.npy", np.zeros(60, dtype=int))
    run = [str(Path(sys.executable).with_name("transferlab")), "measure"]  # the installed entry point
    args = ["measure", "nleep_score", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "y.npy"), "--param", "seed=2"]
    assert main(args) == 0
    # printed with 10 significant digits
    assert float(capsys.readouterr().out) == pytest.approx(nleep_score(f, y, seed=2), rel=1e-9)
    bad = subprocess.run([*run, "transrate_score", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "one.npy")],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    assert "at least 2 classes" in bad.stderr and "Traceback" not in bad.stderr
