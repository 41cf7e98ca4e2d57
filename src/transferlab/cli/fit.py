"""Commands of the transfer scaling-law fit: ``fit-transfer`` and ``synth-transfer``."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from transferlab.cli.app import app
from transferlab.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from transferlab.scaling.fit import FitResult
    from transferlab.scaling.pipeline import TransferAnalysis

def _interval(fit: FitResult, name: str) -> str:
    if name not in fit.intervals:
        return ""
    lo, hi = fit.intervals[name]
    return f"  [{lo:.4g}, {hi:.4g}]"


@app.command("fit-transfer")
def fit_transfer_command(
    losses: Path = typer.Argument(..., help="Tidy CSV with columns model_size, data_size, regime, loss."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print k, alpha, beta, intervals and status as JSON."),
    figures: Path | None = typer.Option(None, "--figures", help="Write the figures (PNG and SVG) into this folder."),
    method: str = typer.Option("direct", "--method", help="direct | huber | fit_the_fits."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples (0: no intervals, else >= 20)."),
    resample: str = typer.Option("model_size", "--resample", help="Bootstrap unit: model_size | points."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    low_data_fraction: float = typer.Option(0.1, "--low-data-fraction", help="Keep D_F <= this * D(N)."),
) -> None:
    """Measure effective data transferred and fit D_T = k D_F^alpha N^beta with intervals."""
    from transferlab.scaling.fit import FIT_METHODS
    from transferlab.scaling.io import read_losses_csv
    from transferlab.scaling.pipeline import analyze_transfer

    if method not in FIT_METHODS:
        raise ConfigError(f"--method must be one of {', '.join(FIT_METHODS)}; got {method!r}")
    if resample not in ("model_size", "points"):
        raise ConfigError(f"--resample must be 'model_size' or 'points'; got {resample!r}")
    table = read_losses_csv(losses)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analysis = analyze_transfer(
            table, method=method, n_boot=n_boot, resample=resample, level=level, seed=seed,  # type: ignore[arg-type]
            low_data_fraction=low_data_fraction,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)

    fit = analysis.fit
    if as_json:
        print(json.dumps(analysis.summary(), indent=2, default=float))
    else:
        counts = analysis.effective.counts()
        level_text = f" ({100 * level:g} % intervals, bootstrap by {resample})" if fit.intervals else ""
        print(f"transfer law D_T = k D_F^alpha N^beta, {fit.method} fit{level_text}:")
        print(f"  k        = {fit.k:.4g}   (log10 k = {fit.log10_k:.4f}{_interval(fit, 'log10_k')})")
        print(f"  alpha    = {fit.alpha:.4f}{_interval(fit, 'alpha')}")
        print(f"  beta     = {fit.beta:.4f}{_interval(fit, 'beta')}")
        print(f"  status   = {fit.status}; {fit.n_points} points over {fit.n_model_sizes} model sizes; "
              f"residual std (log D_T) = {fit.residual_std:.3g}")
        print("  points   = " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v))
    if figures is not None or output is not None:
        _write_outputs(analysis, losses, output, figures, quiet=as_json)


def _write_outputs(
    analysis: TransferAnalysis, source: Path, output: Path | None, figures_dir: Path | None, *, quiet: bool
) -> None:
    """Figures into ``figures_dir`` and/or the HTML report at ``output``."""
    from transferlab.report import ReportSection, collect_provenance, save_figures, write_report
    from transferlab.scaling.figures import transfer_captions, transfer_figures

    figs = transfer_figures(analysis)
    captions = transfer_captions(analysis)
    if figures_dir is not None:
        paths = save_figures(figs, figures_dir)
        if not quiet:
            print(f"figures: {len(paths)} files in {figures_dir}")
    if output is not None:
        fit, eff, surface = analysis.fit, analysis.effective, analysis.surface
        law_rows = [
            {"parameter": name, "estimate": value,
             "lower": fit.intervals.get(name, (float("nan"),) * 2)[0] if fit.intervals else "",
             "upper": fit.intervals.get(name, (float("nan"),) * 2)[1] if fit.intervals else ""}
            for name, value in (("alpha", fit.alpha), ("beta", fit.beta), ("log10_k", fit.log10_k))
        ]
        curve_rows = [
            {"model_size": c.model_size, "plateau L_inf": c.plateau, "D(N)": c.data_for_plateau(eff.plateau_fraction),
             "q": c.q, "p": c.p, "rms_log_residual": c.rms_log_residual, "points": c.n_points, "status": c.status}
            for c in eff.curves.values()
        ]
        sections = [
            ReportSection(
                "Transfer law",
                text=(f"D_T = k D_F^alpha N^beta fitted by {fit.method} on {fit.n_points} low-data points "
                      f"(D_F <= {eff.low_data_fraction:g} D(N)); status {fit.status}. Intervals: "
                      + (f"{100 * (fit.level or 0):g} % percentile bootstrap over {fit.resample} "
                         f"({fit.n_boot} resamples, {fit.n_boot_failed} unfit)." if fit.intervals else "none.")),
                figures={k: figs[k] for k in ("scaling_transferred_data", "scaling_fraction_from_transfer")},
                tables={"parameters": law_rows},
                captions=captions,
            ),
            ReportSection(
                "Scratch curves and effective data",
                text=("Per model size the scratch loss is fitted by L(D) = L_ref (u + v (D/D_ref)^-q)^p "
                      "(monotone, saturating); each fine-tuned loss is inverted on it. Points outside the "
                      "curve's range are censored, not extrapolated."),
                figures={"scaling_loss_curves": figs["scaling_loss_curves"]},
                tables={"scratch curves": curve_rows, "fine-tuned runs": eff.rows()},
                captions=captions,
            ),
            ReportSection(
                "Scratch surface L(N, D) = E + A/N^a + B/D^b",
                text="Multi-start log-space Huber fit of all scratch runs (Chinchilla approach 3).",
                tables={"surface": [surface.to_dict()]},
            ),
        ]
        summary = {"input": str(source), "k": fit.k, "alpha": fit.alpha, "beta": fit.beta, "status": fit.status}
        write_report(output, "Scaling laws for transfer", sections, summary=summary, provenance=collect_provenance())
        if not quiet:
            print(f"report: {output}")
    for fig in figs.values():
        fig.clear()


@app.command("synth-transfer")
def synth_transfer_command(
    out: Path = typer.Argument(..., help="Where to write the tidy CSV."),
    seed: int = typer.Option(0, "--seed", help="Seed of the loss noise."),
    noise: float = typer.Option(0.002, "--noise", help="Relative loss noise (0.002 = 0.2 %)."),
    k: float = typer.Option(1.9e4, "--k", help="Injected k."),
    alpha: float = typer.Option(0.18, "--alpha", help="Injected alpha."),
    beta: float = typer.Option(0.38, "--beta", help="Injected beta."),
    n_sizes: int = typer.Option(9, "--n-sizes", help="Model sizes, log-spaced from 1e5 to 1e9."),
) -> None:
    """Write a synthetic tidy loss CSV from a Kaplan-form surface with an injected transfer law."""
    from transferlab.scaling.io import write_losses_csv
    from transferlab.scaling.law import TransferLaw
    from transferlab.scaling.synthetic import SyntheticSurface, log_grid, synthetic_losses

    if n_sizes < 2:
        raise ConfigError(f"--n-sizes must be >= 2; got {n_sizes}")
    surface = SyntheticSurface(law=TransferLaw(k, alpha, beta), noise=noise,
                               model_sizes=log_grid(1e5, 1e9, n_sizes))
    table = synthetic_losses(surface, seed=seed)
    write_losses_csv(table, out)
    print(f"wrote {len(table)} runs ({len(surface.model_sizes)} model sizes; k={k:g}, alpha={alpha:g}, "
          f"beta={beta:g}, noise={noise:g}, seed={seed}) to {out}")
