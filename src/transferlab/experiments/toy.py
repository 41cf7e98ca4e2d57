"""``toy``: a tiny built-in experiment kind that exercises the engine, not a paper.

Each cell draws ``n`` samples ``x ~ N(mu, sigma^2)`` from its own generator and returns the sample
mean and the unbiased sample variance; :meth:`ToyExperiment.analyze` checks them against the truth
(``E[mean] = mu``, ``E[var] = sigma^2``). Knobs for engine tests and benchmarks:

- ``work``: extra CPU work per cell (``work`` matrix products of size 64x64), a CPU-bound load;
- ``sleep``: seconds to sleep per cell, for crash and concurrency tests;
- ``fail``: ``"raise"`` makes the cell raise, ``"nan"`` makes it return NaN, ``"exit"`` kills the
  worker process (``os._exit``; only under the process executor) -- each must end as a failed cell
  with the reason, never as stored numbers, and must not take healthy cells down with it.

If the environment variable ``TRANSFERLAB_TOY_TRACE`` names a file, every computed cell key is
appended to it (one line per computation), so tests can count recomputations.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from transferlab.experiments.base import Cell, Experiment, ExperimentConfig, Results, ResultTable

__all__ = ["ToyConfig", "ToyExperiment"]


class ToyConfig(ExperimentConfig):
    n: int = Field(100, ge=2, description="samples per cell")
    mu: float = 0.0
    sigma: float = Field(1.0, gt=0)
    work: int = Field(0, ge=0, description="64x64 matrix products of busy work per cell")
    sleep: float = Field(0.0, ge=0, description="seconds to sleep per cell")
    fail: Literal["none", "raise", "nan", "exit"] = "none"


class ToyExperiment(Experiment):
    name = "toy"
    version = "1"
    Config = ToyConfig
    description = "Gaussian sample mean and variance per cell; a test bed for the sweep engine."

    def batch_key(self, config: ToyConfig) -> tuple[int]:
        return (config.n,)

    def run_batch(self, cells: Sequence[Cell]) -> list[dict[str, Any]]:
        trace = os.environ.get("TRANSFERLAB_TOY_TRACE")
        rows = []
        for cell in cells:
            cfg: ToyConfig = cell.config  # type: ignore[assignment]
            if cfg.fail == "raise":
                raise RuntimeError(f"toy cell asked to fail (mu={cfg.mu})")
            if cfg.fail == "exit":
                if multiprocessing.parent_process() is None:
                    raise RuntimeError("fail='exit' needs the process executor (it would end the driver)")
                os._exit(3)
            x = cell.rng().normal(cfg.mu, cfg.sigma, size=cfg.n)
            if cfg.work:
                _busy(cfg.work, cell.rng(stream=1))
            if cfg.sleep:
                time.sleep(cfg.sleep)
            mean = float("nan") if cfg.fail == "nan" else float(x.mean())
            rows.append({"mean": mean, "var": float(x.var(ddof=1))})
            if trace:
                with open(trace, "a", encoding="utf-8") as fh:
                    fh.write(cell.key + "\n")
        return rows

    def analyze(self, table: ResultTable) -> Results:
        summary_rows = []
        for (mu, sigma, n), rows in table.group_by("mu", "sigma", "n").items():
            means = np.array([r["mean"] for r in rows])
            variances = np.array([r["var"] for r in rows])
            summary_rows.append(
                {
                    "mu": mu,
                    "sigma": sigma,
                    "n": n,
                    "cells": len(rows),
                    "mean_of_means": float(means.mean()),
                    "stderr_theory": float(sigma / np.sqrt(n * len(rows))),
                    "mean_of_vars": float(variances.mean()),
                }
            )
        summary = {"cells ok": len(table.rows), "cells failed": len(table.failed)}
        return Results(tables={"by (mu, sigma, n)": summary_rows}, summary=summary)

    def figures(self, results: Results) -> dict[str, Any]:
        from matplotlib.figure import Figure

        rows = results.tables.get("by (mu, sigma, n)", [])
        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot()
        if rows:
            mu = np.array([r["mu"] for r in rows])
            est = np.array([r["mean_of_means"] for r in rows])
            err = np.array([r["stderr_theory"] for r in rows])
            ax.errorbar(mu, est, yerr=2 * err, fmt="o", label="sample mean ± 2 SE")
            ax.plot(np.sort(mu), np.sort(mu), "k--", lw=1, label="truth")
            ax.legend()
        ax.set_xlabel("mu")
        ax.set_ylabel("estimated mean")
        ax.set_title("toy: sample mean vs truth")
        return {"toy_means": fig}

    def figure_captions(self, results: Results) -> dict[str, str]:
        return {"toy_means": ("Sample mean of each (mu, sigma, n) group against the true mean mu: points with "
                              "bars of ±2 standard errors (sigma / sqrt(n cells)); dashed line: estimate = truth.")}


def _busy(work: int, rng: np.random.Generator) -> None:
    a = rng.standard_normal((64, 64))
    for _ in range(work):
        a = np.tanh(a @ a * (1 / 64))
