"""The report's figures, each a function (runs, ...) -> PNG bytes. matplotlib without pyplot: no
global state, no display needed."""

import io
import textwrap

import numpy as np
from matplotlib.figure import Figure

from hatelens.runs import FinishedRun

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
DPI = 100


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrices(runs: dict[str, FinishedRun]) -> bytes:
    """One 2x2 matrix per run (rows: true label, columns: predicted; invalid answers count as wrong)."""
    figure = Figure(figsize=(3.6 * len(runs), 3.4), layout="constrained")
    for index, (label, run) in enumerate(runs.items()):
        axes = figure.add_subplot(1, len(runs), index + 1)
        counts = run.metrics["confusion_matrix"]
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        axes.imshow(matrix, cmap="Blues", vmin=0)
        for (row, column), value in np.ndenumerate(matrix):
            axes.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > matrix.max() / 2 else "black", fontsize=12)
        axes.set_xticks([0, 1], ["normal", "hate"])
        axes.set_yticks([0, 1], ["normal", "hate"])
        axes.set_xlabel("predicted")
        axes.set_ylabel("true" if index == 0 else "")
        axes.set_title(textwrap.fill(label, 28), fontsize=10)
    return _png(figure)


def group_rates(runs: dict[str, FinishedRun]) -> bytes:
    """Per-group FPR and FNR of each run, bars with their 95% bootstrap intervals."""
    groups = sorted({group for run in runs.values() for group in run.metrics["per_group"]})
    figure = Figure(figsize=(10, 3.6))
    width = 0.8 / len(runs)
    for panel, rate in enumerate(("fpr", "fnr")):
        axes = figure.add_subplot(1, 2, panel + 1)
        for index, (label, run) in enumerate(runs.items()):
            positions = np.arange(len(groups)) + (index - (len(runs) - 1) / 2) * width
            values, lower, upper = [], [], []
            for group in groups:
                entry = run.metrics["per_group"].get(group, {})
                value = entry.get(rate)
                interval = (entry.get("ci") or {}).get(rate)
                values.append(np.nan if value is None else value)
                lower.append(0 if value is None or not interval else max(value - interval[0], 0))
                upper.append(0 if value is None or not interval else max(interval[1] - value, 0))
            axes.bar(positions, values, width, yerr=[lower, upper], capsize=3, label=label,
                     color=COLORS[index % len(COLORS)])
        axes.set_xticks(np.arange(len(groups)), groups)
        axes.set_ylim(0, 1)
        axes.set_title(f"{rate.upper()} by group (95% CI)", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        if panel == 0:
            axes.legend(fontsize=8)
    return _png(figure)


def roc_curves(runs: dict[str, FinishedRun]) -> bytes:
    """ROC curve of every run that has scores, AUC in the legend."""
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(4.8, 4.4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (label, run) in enumerate(runs.items()):
        arrays = run.arrays()
        scored = ~np.isnan(arrays["scores"])
        if len(set(arrays["y_true"][scored].tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(arrays["y_true"][scored], arrays["scores"][scored])
        auc = run.metrics.get("roc_auc")
        axes.plot(fpr, tpr, color=COLORS[index % len(COLORS)],
                  label=f"{label} (AUC {auc:.3f})" if auc is not None else label)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curves", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def score_histograms(runs: dict[str, FinishedRun]) -> bytes:
    """P(hate) histograms per group (columns) and run (rows), hate and normal rows overlaid."""
    groups = sorted({group for run in runs.values() for group in run.metrics["per_group"]})
    figure = Figure(figsize=(3.2 * len(groups), 2.4 * len(runs)), layout="constrained")
    bins = np.linspace(0, 1, 21)
    for row, (label, run) in enumerate(runs.items()):
        arrays = run.arrays()
        for column, group in enumerate(groups):
            axes = figure.add_subplot(len(runs), len(groups), row * len(groups) + column + 1)
            in_group = (arrays["groups"] == group) & ~np.isnan(arrays["scores"])
            for code, name, color in ((0, "normal", COLORS[0]), (1, "hate", COLORS[3])):
                axes.hist(arrays["scores"][in_group & (arrays["y_true"] == code)], bins=bins, alpha=0.6,
                          color=color, label=name)
            axes.set_title(f"{label}: {group}", fontsize=9)
            if row == len(runs) - 1:
                axes.set_xlabel("P(hate)")
            if row == 0 and column == 0:
                axes.legend(fontsize=8)
    return _png(figure)


def calibration_curves(runs: dict[str, FinishedRun]) -> bytes:
    """Reliability diagram: observed share of hate per bin of P(hate) (10 equal-width bins)."""
    from sklearn.calibration import calibration_curve

    figure = Figure(figsize=(4.8, 4.4))
    axes = figure.add_subplot(1, 1, 1)
    for index, (label, run) in enumerate(runs.items()):
        arrays = run.arrays()
        scored = ~np.isnan(arrays["scores"])
        if len(set(arrays["y_true"][scored].tolist())) < 2:
            continue
        observed, predicted = calibration_curve(arrays["y_true"][scored], arrays["scores"][scored], n_bins=10)
        axes.plot(predicted, observed, marker="o", color=COLORS[index % len(COLORS)], label=label)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    axes.set_xlabel("mean P(hate) in bin")
    axes.set_ylabel("share of hate rows in bin")
    axes.set_title("Calibration curve", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    return _png(figure)


def loss_curves(curves: dict[str, list[tuple[float, float]]]) -> bytes:
    """Training and validation loss by epoch."""
    figure = Figure(figsize=(5.6, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    for index, (kind, label) in enumerate((("train", "training loss"), ("eval", "validation loss"))):
        if curves[kind]:
            x, y = zip(*curves[kind])
            axes.plot(x, y, marker="o" if kind == "eval" else None, color=COLORS[index], label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title("Fine-tuning loss", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)
