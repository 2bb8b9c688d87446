"""The plain-text summary a person reads after an evaluation (summary.txt and the CLI's output)."""

from hatelens.config import TARGET_F1
from hatelens.data.labels import GROUPS
from hatelens.report.formatting import interval, num


def _num(value, digits: int = 4) -> str:
    return num(value, digits)


def _interval(bounds) -> str:
    return interval(bounds, missing="")


def group_order(groups) -> list[str]:
    """The data's groups first, in their usual order, then any others alphabetically."""
    return sorted(groups, key=lambda group: (group not in GROUPS, GROUPS.index(group) if group in GROUPS else 0, group))


def format_summary(result: dict, *, target_f1: float | None = TARGET_F1) -> str:
    run = result.get("run", {})
    lines = [
        f"Model:              {run.get('model_version')}  (template {run.get('template')}, {run.get('mode')} mode)",
        f"Data:               {run.get('data')}" + (f"  (stratified sample of {run['max_samples']})"
                                                    if run.get("max_samples") else ""),
        f"Total samples:      {result['n']}",
        f"Valid predictions:  {result['n_valid']} ({100 * result['n_valid'] / max(result['n'], 1):.1f}%)"
        f"  invalid: {result['n_invalid']} (counted as errors; valid-only figures in metrics.json)",
    ]
    truncated = result.get("truncated") or {}
    if truncated.get("overall"):
        cut_groups = ", ".join(f"{group} {count}" for group, count in truncated["per_group"].items() if count)
        lines.append(f"Truncated:          {truncated['overall']} post(s) cut to fit max_length_tokens ({cut_groups})")
    lines += ["", f"{'Metric':<12}{'Value':>8}  95% CI"]
    ci = result.get("ci", {})
    for key, label in (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"),
                       ("f1", "F1"), ("fpr", "FPR"), ("fnr", "FNR"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
        lines.append(f"{label:<12}{_num(result.get(key)):>8}  {_interval(ci.get(key))}".rstrip())
    lines += ["", f"{'Group':<14}{'n':>5}{'FPR':>8}{'FNR':>8}{'F1':>8}{'invalid':>9}  FPR 95% CI        FNR 95% CI"]
    groups = result.get("per_group", {})
    for group in group_order(groups):
        row = groups[group]
        lines.append(f"{group:<14}{row['n']:>5}{_num(row['fpr'], 3):>8}{_num(row['fnr'], 3):>8}"
                     f"{_num(row['f1'], 3):>8}{row.get('n_invalid', 0):>9}  "
                     f"{_interval(row.get('ci', {}).get('fpr')):<18}{_interval(row.get('ci', {}).get('fnr'))}".rstrip())
    if target_f1 is not None and result.get("f1") is not None:
        gap = result["f1"] - target_f1
        verdict = "beats" if gap > 0 else "does not beat"
        lines += ["", f"Target to beat: F1 {target_f1:.3f} -> this run {result['f1']:.3f} ({verdict} it by {abs(gap):.3f})"]
    return "\n".join(lines) + "\n"
