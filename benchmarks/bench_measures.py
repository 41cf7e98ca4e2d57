"""Benchmark of transferlab.measures at realistic sizes, against naive references in the same run.

Run (other jobs share the cores, so take the lock):

    flock /tmp/transferlab-bench.lock .venv/bin/python benchmarks/bench_measures.py [--quick]

Prints wall times, ratios (reference / ours, measured in this run), peak traced memory
(``tracemalloc``: numpy buffers) and, for linear CKA, achieved FLOP/s next to the machine's float64
matmul ceiling measured here.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np


def timed(fn, *args, repeat: int = 1, **kwargs):
    """(best wall time in s, peak traced MiB, result) over ``repeat`` runs."""
    best, peak, out = np.inf, 0.0, None
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        best = min(best, dt)
    return best, peak, out


def matmul_ceiling(dtype: type = np.float64) -> float:
    """GEMM rate of this machine now in ``dtype``, GFLOP/s (8192-row block, 1024 x 1024 output)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8192, 1024)).astype(dtype), rng.standard_normal((8192, 1024)).astype(dtype)
    a.T @ b
    t, _, _ = timed(lambda: a.T @ b, repeat=3)
    return 2 * 8192 * 1024 * 1024 / t / 1e9


def gram_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Naive reference: linear CKA through n x n centered Gram matrices."""
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    k, l = x @ x.T, y @ y.T
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


def kdtree_twonn(x: np.ndarray) -> float:
    """Reference: TwoNN (MLE form) with scipy's cKDTree for the 2-NN search."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(x).query(x, k=3)
    return float((x.shape[0] - 1) / np.sum(np.log(d[:, 2] / d[:, 1])))


def naive_logme(f: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """Reference: per-class fixed point with an explicit d x d solve per iteration."""
    n, d = f.shape
    ftf = f.T @ f
    lam = np.linalg.eigvalsh(ftf)
    out = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        fty = f.T @ y
        alpha = beta = 1.0
        for _ in range(max_iter):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, fty)
            gamma = np.sum(beta * lam / (alpha + beta * lam))
            res2 = np.sum((f @ m - y) ** 2)
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / res2
            done = abs(new_alpha - alpha) / alpha < 1e-8 and abs(new_beta - beta) / beta < 1e-8
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, fty)
        ev = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
              - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1])
        out.append(ev / n)
    return float(np.mean(out))


def row(name: str, ours: float, ref: float | None, ref_name: str, peak: float, extra: str = "") -> None:
    ratio = f"{ref / ours:7.1f}x" if ref is not None else "      -"
    ref_s = f"{ref:8.2f} s" if ref is not None else "       -"
    print(f"{name:38s} {ours:8.2f} s   {ref_name:28s} {ref_s}  {ratio}   peak {peak:8.1f} MiB {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1

    from transferlab.measures import cka_similarity, logme_score, twonn_dimension, wasserstein_distance

    rng = np.random.default_rng(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"load average {load:.1f} at start")
    ceiling = matmul_ceiling()
    ceiling32 = matmul_ceiling(np.float32)
    print(f"# matmul ceiling here: float64 {ceiling:.1f} GFLOP/s, float32 {ceiling32:.1f} GFLOP/s")
    print(f"{'measure':38s} {'ours':>10s}   {'reference':28s} {'ref time':>10s}  {'ratio':>8s}")

    # --- linear CKA: feature form at n = 50,000, d = 1,024 float32; Gram reference at n = 5,000.
    n, d = 50_000 // scale, 1024
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = (x[:, :d] @ rng.standard_normal((d, d), dtype=np.float32) / 32 + rng.standard_normal((n, d), dtype=np.float32))
    t, peak, val = timed(cka_similarity, x, y)
    flops = 2 * n * d * d * 3  # X^T Y, X^T X, Y^T Y as full products
    input_mib = (x.nbytes + y.nbytes) / 2**20
    row(f"linear CKA n={n} d={d} f32", t, None, "", peak,
        f"(inputs {input_mib:.0f} MiB; {flops / t / 1e9:.0f} GFLOP/s = {100 * flops / t / 1e9 / ceiling32:.0f}% of the "
        f"float32 ceiling; Gram form would need {2 * n * n * 8 / 2**30:.0f} GiB)")
    ns = 5000 // scale
    t_f, peak_f, v_f = timed(cka_similarity, x[:ns], y[:ns], repeat=3)
    t_g, peak_g, v_g = timed(gram_cka, x[:ns], y[:ns])
    row(f"linear CKA n={ns} d={d} f32", t_f, t_g, "n x n Gram form", peak_f,
        f"(Gram peak {peak_g:.0f} MiB; |diff| {abs(v_f - v_g):.1e})")

    # --- TwoNN at n = 20,000, d = 100 (data on a 10-dimensional linear manifold).
    n = 20_000 // scale
    z = rng.standard_normal((n, 10)) @ rng.standard_normal((10, 100))
    t, peak, val = timed(twonn_dimension, z, method="mle")
    t_r, _, val_r = timed(kdtree_twonn, z)
    row(f"TwoNN n={n} d=100", t, t_r, "scipy cKDTree 2-NN", peak, f"(ID {val:.2f} vs {val_r:.2f})")

    # --- exact W1 at n = 2,000 (d = 10).
    n = 2000 // scale
    a, b = rng.standard_normal((n, 10)), rng.standard_normal((n, 10)) + 0.3
    t, peak, val = timed(wasserstein_distance, a, b)
    try:
        import ot

        def pot_w1():
            return ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), ot.dist(a, b, metric="euclidean"), numItermax=10**7)

        t_r, _, val_r = timed(pot_w1)
        row(f"exact W1 n={n} d=10", t, t_r, "POT ot.emd2 (network simplex)", peak, f"(|diff| {abs(val - val_r):.1e})")
    except ImportError:
        row(f"exact W1 n={n} d=10", t, None, "POT not installed", peak)

    # --- LogME at n = 20,000, d = 1,024, 10 classes.
    n = 20_000 // scale
    labels = np.arange(n) % 10
    f = rng.standard_normal((n, 1024)) + 0.5 * np.eye(10, 1024)[labels] * 4
    t, peak, val = timed(logme_score, f, labels)
    t_r, _, val_r = timed(naive_logme, f, labels)
    row(f"LogME n={n} d=1024 C=10", t, t_r, "per-class d x d solves", peak, f"(|diff| {abs(val - val_r):.1e})")


if __name__ == "__main__":
    main()
