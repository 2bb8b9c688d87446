"""Two runs on the same examples -> deltas, significance, fixed and broken cases, criteria verdicts.

The runs are joined by example id. Overall and per-group figures come from each run's metrics.json;
what only a pair can tell is computed here: McNemar's exact test on paired correctness, paired
bootstrap intervals (the same resampled rows for both systems) for ΔF1, Δaccuracy and every
group's ΔFPR / ΔFNR, and the cases fine-tuning fixed or broke.
"""

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hatelens import runs
from hatelens.config import CONFIDENCE, N_BOOTSTRAP
from hatelens.data.labels import encode_predictions
from hatelens.errors import DataError
from hatelens.evaluation import criteria as success_criteria
from hatelens.evaluation.bootstrap import paired_bootstrap_delta
from hatelens.evaluation.metrics import mcnemar_exact, rate_metric
from hatelens.report.formatting import interval, num, percent, signed
from hatelens.runs import FinishedRun, load_finished_run

logger = logging.getLogger(__name__)

OVERALL_METRICS = ("f1", "accuracy", "precision", "recall", "fpr", "fnr", "roc_auc", "pr_auc")
GROUP_METRICS = ("f1", "accuracy", "precision", "recall", "fpr", "fnr", "roc_auc")
CASE_COLUMNS = ("change", "id", "group", "label", "baseline_prediction", "baseline_score",
                "finetuned_prediction", "finetuned_score", "text")
TOP_CASES = 10  # fixed and broken cases kept in comparison.json (all of them are in cases.csv)


@dataclass
class ComparisonResult:
    output_dir: Path
    comparison: dict  # the contents of comparison.json
    cases_path: Path  # cases.csv: every fixed and broken case
    passed: bool  # no criterion failed


def compare(baseline_run: str | Path, finetuned_run: str | Path, *, criteria: dict | None = None,
            training_summary: dict | None = None, output_dir: str | Path | None = None,
            n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> ComparisonResult:
    """Compare a baseline run with a fine-tuned run of the same examples and write the comparison folder.

    criteria: a mapping of `config.CriteriaConfig` fields (None: the seed's defaults);
    training_summary: the fine-tuning run's training_summary.json (for the validation-loss criterion);
    output_dir: default a new run folder beside the baseline run. Writes comparison.json, cases.csv,
    summary.txt, config.yaml and manifest.json there.
    """
    criteria = success_criteria.validate_criteria(criteria or {})
    baseline, finetuned = load_finished_run(baseline_run), load_finished_run(finetuned_run)
    ids = join_ids(baseline, finetuned)
    rows_a, rows_b = _by_id(baseline), _by_id(finetuned)
    paired = _paired_arrays([rows_a[i] for i in ids], [rows_b[i] for i in ids])

    comparison = {
        "baseline": _describe(baseline),
        "finetuned": _describe(finetuned),
        "n": len(ids),
        "overall": _deltas(baseline.metrics, finetuned.metrics, OVERALL_METRICS),
        "per_group": {group: {"n": baseline.metrics["per_group"][group]["n"],
                              **_deltas(baseline.metrics["per_group"][group],
                                        finetuned.metrics["per_group"].get(group, {}), GROUP_METRICS)}
                      for group in sorted(baseline.metrics["per_group"])},
        "paired_bootstrap": _paired_bootstrap(paired, n_bootstrap, seed),
        "mcnemar": {**mcnemar_exact(paired["correct_a"], paired["correct_b"]),
                    "alpha": criteria["significance_alpha"]},
    }
    comparison["mcnemar"]["significant"] = comparison["mcnemar"]["p_value"] < criteria["significance_alpha"]
    fixed, broken = changed_cases([rows_a[i] for i in ids], [rows_b[i] for i in ids])
    comparison["cases"] = {"fixed": len(fixed), "broken": len(broken), "csv": "cases.csv",
                           "top_fixed": fixed[:TOP_CASES], "top_broken": broken[:TOP_CASES]}
    comparison["criteria"] = success_criteria.evaluate_criteria(criteria, comparison, training_summary)
    comparison["passed"] = success_criteria.passed(comparison["criteria"])
    comparison["verdict"] = "PASS" if comparison["passed"] else "FAIL"
    comparison["training_summary"] = training_summary

    output = Path(output_dir) if output_dir else runs.new_run_dir(Path(baseline.run_dir).parent, "compare")
    output.mkdir(parents=True, exist_ok=True)
    cases_path = output / "cases.csv"
    runs.write_atomic(cases_path, cases_csv(fixed + broken))
    runs.write_yaml(output / "config.yaml", {"criteria": criteria, "n_bootstrap": n_bootstrap, "seed": seed})
    runs.write_json(output / "manifest.json", runs.manifest(
        step="compare", baseline_run=str(baseline.run_dir), finetuned_run=str(finetuned.run_dir)))
    runs.write_atomic(output / "summary.txt", format_comparison(comparison))
    runs.write_json(output / "comparison.json", comparison)
    logger.info("comparison written to %s: %s", output, comparison["verdict"])
    return ComparisonResult(output_dir=output, comparison=comparison, cases_path=cases_path,
                            passed=comparison["passed"])


def load_comparison(output_dir: str | Path) -> dict:
    """comparison.json of a finished comparison folder."""
    path = Path(output_dir) / "comparison.json"
    if not path.is_file():
        raise DataError(f"{path} not found; `hatelens compare BASELINE_RUN FINETUNED_RUN` writes it")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- joining ----------------------------------------------------------------------------------------


def join_ids(baseline: FinishedRun, finetuned: FinishedRun) -> list[str]:
    """The shared example ids, sorted; DataError naming the counts when the example sets differ."""
    ids_a, ids_b = {row["id"] for row in baseline.rows}, {row["id"] for row in finetuned.rows}
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        example = (only_a or only_b)[0]
        raise DataError(
            f"the runs hold different examples: baseline {baseline.run_dir} has {len(ids_a)}, fine-tuned "
            f"{finetuned.run_dir} has {len(ids_b)}; {len(only_a)} only in the baseline, {len(only_b)} only in the "
            f"fine-tuned run (e.g. {example}); evaluate both on the same data file, max_samples and seed")
    rows_a, rows_b = _by_id(baseline), _by_id(finetuned)
    for example_id in sorted(ids_a):
        if (rows_a[example_id]["label"], rows_a[example_id]["group"]) != (rows_b[example_id]["label"],
                                                                          rows_b[example_id]["group"]):
            raise DataError(f"example {example_id} has label/group {rows_a[example_id]['label']}/"
                            f"{rows_a[example_id]['group']} in the baseline but {rows_b[example_id]['label']}/"
                            f"{rows_b[example_id]['group']} in the fine-tuned run; they were scored on different data")
    return sorted(ids_a)


def _by_id(run: FinishedRun) -> dict[str, dict]:
    return {row["id"]: row for row in run.rows}


def _paired_arrays(rows_a: list[dict], rows_b: list[dict]) -> dict[str, np.ndarray]:
    """y_true, pred_a, pred_b (0/1; an invalid answer is the wrong class), correctness, groups."""
    labels = [row["label"] for row in rows_a]
    y_true, pred_a, _ = encode_predictions(labels, [row["prediction"] for row in rows_a])
    _, pred_b, _ = encode_predictions(labels, [row["prediction"] for row in rows_b])
    return {"y_true": y_true, "pred_a": pred_a, "pred_b": pred_b, "correct_a": pred_a == y_true,
            "correct_b": pred_b == y_true, "groups": np.array([row["group"] for row in rows_a], dtype=object)}


# ---- figures -------------------------------------------------------------------------------------------


def _deltas(metrics_a: dict, metrics_b: dict, names: tuple[str, ...]) -> dict[str, dict]:
    """{metric: {"baseline", "finetuned", "delta", "relative", "baseline_ci", "finetuned_ci"}}."""
    result = {}
    for name in names:
        a, b = metrics_a.get(name), metrics_b.get(name)
        delta = None if a is None or b is None else b - a
        result[name] = {"baseline": a, "finetuned": b, "delta": delta,
                        "relative": None if delta is None or not a else delta / a,
                        "baseline_ci": metrics_a.get("ci", {}).get(name),
                        "finetuned_ci": metrics_b.get("ci", {}).get(name)}
    return result


def _paired_bootstrap(paired: dict, n_bootstrap: int, seed: int) -> dict:
    """Paired intervals: ΔF1 and Δaccuracy over all rows; ΔFPR and ΔFNR within each group."""
    y_true, pred_a, pred_b, groups = paired["y_true"], paired["pred_a"], paired["pred_b"], paired["groups"]
    settings = {"n_bootstrap": n_bootstrap, "seed": seed}
    result = {"n_bootstrap": n_bootstrap, "seed": seed, "confidence": CONFIDENCE,
              "method": "percentile; rows resampled with replacement, the same rows for both runs; "
                        "group deltas resample rows within the group",
              "f1": paired_bootstrap_delta(rate_metric("f1"), y_true, pred_a, pred_b, **settings),
              "accuracy": paired_bootstrap_delta(rate_metric("accuracy"), y_true, pred_a, pred_b, **settings),
              "groups": {}}
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        result["groups"][group] = {
            name: paired_bootstrap_delta(rate_metric(name), y_true[rows], pred_a[rows], pred_b[rows], **settings)
            for name in ("fpr", "fnr", "f1")}
    return result


# ---- cases ------------------------------------------------------------------------------------------------


def changed_cases(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[dict], list[dict]]:
    """(fixed, broken): rows the baseline got wrong and the fine-tuned model right, and the reverse.

    Each list is sorted by how far the score moved (largest first), then by id.
    """
    fixed, broken = [], []
    for a, b in zip(rows_a, rows_b):
        right_a, right_b = a["prediction"] == a["label"], b["prediction"] == b["label"]
        if right_a == right_b:
            continue
        case = {"change": "fixed" if right_b else "broken", "id": a["id"], "group": a["group"], "label": a["label"],
                "baseline_prediction": a["prediction"], "baseline_score": a["score"],
                "finetuned_prediction": b["prediction"], "finetuned_score": b["score"], "text": a["text"]}
        (fixed if right_b else broken).append(case)
    for cases in (fixed, broken):
        cases.sort(key=lambda case: (-_score_shift(case), case["id"]))
    return fixed, broken


def _score_shift(case: dict) -> float:
    if case["baseline_score"] is None or case["finetuned_score"] is None:
        return 0.0
    return abs(case["finetuned_score"] - case["baseline_score"])


def cases_csv(cases: list[dict]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CASE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(cases)
    return buffer.getvalue()


def _describe(run: FinishedRun) -> dict:
    info = run.metrics.get("run", {})
    return {"run_dir": str(run.run_dir), "model_version": info.get("model_version"), "data": run.data_file,
            "max_samples": info.get("max_samples"), "thresholds": info.get("thresholds"), "n": run.metrics["n"]}


# ---- the text a person reads ----------------------------------------------------------------------------------


def format_comparison(comparison: dict) -> str:
    """The comparison as plain text: overall, per group, significance, cases, criteria, verdict."""
    bootstrap = comparison["paired_bootstrap"]
    lines = [f"Baseline:   {comparison['baseline']['model_version']}  ({comparison['baseline']['run_dir']})",
             f"Fine-tuned: {comparison['finetuned']['model_version']}  ({comparison['finetuned']['run_dir']})",
             f"Examples:   {comparison['n']} (joined by id)  data: {comparison['baseline']['data']}", "",
             f"{'Metric':<10}{'baseline':>10}{'fine-tuned':>12}{'delta':>9}{'relative':>10}  paired 95% CI of delta"]
    for name in OVERALL_METRICS:
        entry = comparison["overall"][name]
        bounds = bootstrap[name]["ci"] if name in ("f1", "accuracy") else None
        lines.append(f"{name:<10}{num(entry['baseline']):>10}{num(entry['finetuned']):>12}"
                     f"{signed(entry['delta']):>9}{percent(entry['relative']):>10}  {interval(bounds, sign=True)}".rstrip())
    lines += ["", f"{'Group':<13}{'n':>5}  {'FPR before -> after (delta, 95% CI)':<44}FNR before -> after (delta, 95% CI)"]
    for group, entry in comparison["per_group"].items():
        cells = []
        for name in ("fpr", "fnr"):
            delta = bootstrap["groups"].get(group, {}).get(name, {})
            cells.append(f"{num(entry[name]['baseline'])} -> {num(entry[name]['finetuned'])} "
                         f"({signed(entry[name]['delta'])}, {interval(delta.get('ci'), sign=True)})")
        lines.append(f"{group:<13}{entry['n']:>5}  {cells[0]:<44}{cells[1]}")
    mcnemar = comparison["mcnemar"]
    lines += ["", f"McNemar exact test: {mcnemar['c']} rows only the fine-tuned model got right, {mcnemar['b']} only "
                  f"the baseline; p = {mcnemar['p_value']:.4g} ({'' if mcnemar['significant'] else 'not '}"
                  f"significant at {mcnemar['alpha']:g})",
              f"Cases: {comparison['cases']['fixed']} fixed, {comparison['cases']['broken']} broken "
              f"(all in {comparison['cases']['csv']})", "",
              *format_criteria(comparison["criteria"])]
    lines += ["", f"Verdict: {comparison['verdict']}"]
    return "\n".join(lines) + "\n"


def format_criteria(results: list[dict]) -> list[str]:
    """The criteria table as lines: criterion, figure, target, status."""
    header = {"description": "Criterion", "figure": "figure", "target": "target"}
    widths = {key: max(len(str(row[key])) for row in [header, *results]) + 2 for key in header}
    return [f"{row['description']:<{widths['description']}}{row['figure']:<{widths['figure']}}"
            f"{row['target']:<{widths['target']}}{row.get('status', 'status')}" for row in [header, *results]]

