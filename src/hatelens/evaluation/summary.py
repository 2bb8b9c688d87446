"""The plain-text summary a person reads after an evaluation (summary.txt and the CLI's output)."""

GROUP_ORDER = ("lgbtq", "mexican", "middle_east")


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(interval) -> str:
    if not interval or interval[0] is None:
        return ""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def format_summary(result: dict, *, target_f1: float | None = 0.615) -> str:
    run = result.get("run", {})
    lines = [
        f"Model:              {run.get('model_version')}  (template {run.get('template')}, {run.get('mode')} mode)",
        f"Data:               {run.get('data')}" + (f"  (stratified sample of {run['max_samples']})"
                                                    if run.get("max_samples") else ""),
        f"Total samples:      {result['n']}",
        f"Valid predictions:  {result['n_valid']} ({100 * result['n_valid'] / max(result['n'], 1):.1f}%)"
        f"  invalid: {result['n_invalid']} (counted as errors; valid-only figures in metrics.json)",
        "",
        f"{'Metric':<12}{'Value':>8}  95% CI",
    ]
    ci = result.get("ci", {})
    for key, label in (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"),
                       ("f1", "F1"), ("fpr", "FPR"), ("fnr", "FNR"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
        lines.append(f"{label:<12}{_num(result.get(key)):>8}  {_interval(ci.get(key))}".rstrip())
    lines += ["", f"{'Group':<14}{'n':>5}{'FPR':>8}{'FNR':>8}{'F1':>8}{'invalid':>9}  FPR 95% CI        FNR 95% CI"]
    groups = result.get("per_group", {})
    for group in sorted(groups, key=lambda g: (g not in GROUP_ORDER, GROUP_ORDER.index(g) if g in GROUP_ORDER else 0, g)):
        row = groups[group]
        lines.append(f"{group:<14}{row['n']:>5}{_num(row['fpr'], 3):>8}{_num(row['fnr'], 3):>8}"
                     f"{_num(row['f1'], 3):>8}{row.get('n_invalid', 0):>9}  "
                     f"{_interval(row.get('ci', {}).get('fpr')):<18}{_interval(row.get('ci', {}).get('fnr'))}".rstrip())
    if target_f1 is not None and result.get("f1") is not None:
        gap = result["f1"] - target_f1
        verdict = "beats" if gap > 0 else "does not beat"
        lines += ["", f"Target to beat: F1 {target_f1:.3f} -> this run {result['f1']:.3f} ({verdict} it by {abs(gap):.3f})"]
    return "\n".join(lines) + "\n"
