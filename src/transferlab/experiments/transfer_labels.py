"""Downstream accuracy against the source's pretraining label function, from ``transfer`` rows.

The real-data part of Hong et al. (2024) (paper 4, ``docs/models/granularity.md``): one trained source per
label function (``source_labels``: fine, coarse, ``kmeans-aligned:K``, ``kmeans:K``, ``random:K``; see
:mod:`transferlab.tasks.relabel`), transferred to one target. :func:`label_curves` pools, for every
(source data set, target, n, protocol, depth) shared by at least two label functions, each label
function's accuracy -- all test samples, and the easy and hard ones where the rows have them
(``hard_fraction`` > 0) -- with its standard error over all instances and replicates, against K, the number
of pretraining classes (the row field ``source_classes``). :func:`label_figure` draws it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transferlab.tasks.relabel import parse_label_function

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["FAMILY_NAMES", "label_curves", "label_figure"]

#: How each kind of label function is named in tables and legends.
FAMILY_NAMES = {"fine": "fine", "coarse": "coarse", "kmeans-aligned": "aligned k-means",
                "kmeans": "global k-means", "random": "random"}
_SPLITS = (("all", "test_error"), ("easy", "easy_error"), ("hard", "hard_error"))
#: Row fields that may differ between the label functions of one comparison.
_PER_SOURCE = ("source_labels", "source_test_accuracy", "source_classes")


def label_curves(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Group trained-source rows by every field of ``fields`` (the config fields) but ``source_labels`` and
    ``instances``; keep groups with at least two label functions. Returns one dict per group: ``setting``
    (the shared fields), ``title`` and ``rows`` (one per label function, sorted by family then K: ``labels``,
    ``family``, ``K``, ``source_test_accuracy``, and per split s in all / easy / hard present,
    ``s_accuracy`` (1 - mean error) and ``s_se``, plus ``runs`` and ``unconverged``)."""
    from transferlab.experiments.base import ResultTable
    from transferlab.experiments.transfer import pooled_error

    keys = tuple(f for f in fields if f not in ("source_labels", "instances"))
    trained = [r for r in rows if str(r.get("source", "")).startswith("trained:")]
    out = []
    for key, group in ResultTable(trained).group_by(*keys).items():
        setting = dict(zip(keys, key, strict=True))
        by_labels = ResultTable(group).group_by("source_labels")
        if len(by_labels) < 2:
            continue
        entries = []
        for (labels,), runs in by_labels.items():
            fn = parse_label_function(labels)
            entry: dict[str, Any] = {"labels": labels, "family": FAMILY_NAMES[fn.kind],
                                     "K": int(runs[0]["source_classes"]),
                                     "source_test_accuracy": runs[0].get("source_test_accuracy")}
            for split, field in _SPLITS:
                if f"{field}_instances" in runs[0]:
                    mean, se, count = pooled_error(runs, field)
                    entry[f"{split}_accuracy"] = 1.0 - mean
                    entry[f"{split}_se"] = se
            entry["runs"] = count
            entry["unconverged"] = sum(r["unconverged"] for r in runs)
            entries.append(entry)
        order = list(FAMILY_NAMES.values())
        entries.sort(key=lambda e: (order.index(e["family"]), e["K"]))
        target = setting["target"] + ("" if setting["target_labels"] == "fine" else f" ({setting['target_labels']})")
        protocol = setting["protocol"] + ("" if setting.get("k") is None else f" k={setting['k']}")
        title = f"{setting['source'][8:]} -> {target}, n = {setting['n']}, {protocol}"
        out.append({"setting": setting, "title": title, "rows": entries})
    return out


def label_figure(curves: list[dict[str, Any]]) -> Figure:
    """Accuracy against the number of pretraining classes K (log axis) for the curves of one (source data
    set, target, n): one column per protocol, one row per split present (easy and hard, or all). Lines:
    aligned k-means, global k-means and random labels over K; markers: fine (star) and coarse (square)
    labels. Bars: ± 1 standard error over instances and replicates."""
    from matplotlib.figure import Figure

    from transferlab.report.plots import legend_outside

    curves = sorted(curves, key=lambda c: (c["setting"]["protocol"] != "linear_probe", c["setting"]["protocol"]))
    splits = [s for s, _ in _SPLITS[1:] if f"{s}_accuracy" in curves[0]["rows"][0]] or ["all"]
    fig = Figure(figsize=(3.6 * len(curves) + 2.2, 2.8 * len(splits) + 0.6))
    axes = fig.subplots(len(splits), len(curves), squeeze=False, sharex=True)
    styles = {"aligned k-means": ("C0", "o-"), "global k-means": ("C1", "s--"), "random": ("C3", "^:")}
    for col, curve in enumerate(curves):
        for row, split in enumerate(splits):
            ax = axes[row][col]
            for family, (color, fmt) in styles.items():
                pts = [e for e in curve["rows"] if e["family"] == family]
                if pts:
                    ax.errorbar([e["K"] for e in pts], [e[f"{split}_accuracy"] for e in pts],
                                yerr=[e[f"{split}_se"] or 0.0 for e in pts], fmt=fmt, color=color, ms=4, capsize=2,
                                label=family)
            for family, marker in (("fine", "*"), ("coarse", "D")):
                for e in (e for e in curve["rows"] if e["family"] == family):
                    ax.errorbar([e["K"]], [e[f"{split}_accuracy"]], yerr=[e[f"{split}_se"] or 0.0], fmt=marker,
                                color="k", ms=9 if marker == "*" else 6, capsize=2, label=f"{family} labels")
            ax.set_xscale("log")
            ks = sorted({e["K"] for e in curve["rows"]})
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_title(f"{curve['setting']['protocol']}: {split} test samples", fontsize=9)
            if row == len(splits) - 1:
                ax.set_xlabel("pretraining classes K")
            if col == 0:
                ax.set_ylabel("downstream accuracy")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    legend_outside(axes[0][-1], handles=list(unique.values()), labels=list(unique))
    setting = curves[0]["setting"]
    fig.suptitle(f"pretrained on {setting['source'][8:]} with each label function -> {setting['target']} "
                 f"({setting['target_labels']}), n = {setting['n']}", fontsize=10)
    fig.tight_layout()
    return fig
