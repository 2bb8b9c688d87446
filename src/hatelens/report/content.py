"""What the report says, as sections of paragraphs, tables and figures; render.py writes them out
as Markdown and as HTML, so both files always hold the same content."""

from dataclasses import dataclass, field

from hatelens.evaluation import criteria as success_criteria
from hatelens.report import plots
from hatelens.report.formatting import interval, num, percent, signed
from hatelens.runs import FinishedRun

GROUP_RATES = ("fpr", "fnr")
CASE_TEXT_CHARS = 240
OFFENSIVE_WARNING = ("Content warning: the cases below are real posts and generated statements from hate-speech "
                     "datasets. They contain offensive language about LGBTQ+, Mexican and Middle Eastern people and "
                     "are shown only so that errors can be audited.")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    name: str  # file stem: plots/<name>.png beside report.md
    caption: str
    png: bytes


@dataclass
class Callout:
    text: str  # shown boxed: warnings a reader must not miss


@dataclass
class Folded:
    summary: str  # HTML shows `blocks` only when the reader opens them; Markdown shows them in place
    blocks: list


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph) | Table | Plot | Callout | Folded


def build_sections(comparison: dict, runs: dict[str, FinishedRun], *, baseline_label: str, finetuned_label: str,
                   training_summary: dict | None, calibrations: list[dict], notes: list[str]) -> list[Section]:
    """Every section of the report, in reading order. `runs` maps a display label to a finished run;
    it holds the baseline and the fine-tuned run under the two labels given, then any others."""
    pair = {baseline_label: runs[baseline_label], finetuned_label: runs[finetuned_label]}
    scored = {label: run for label, run in runs.items() if run.metrics.get("n_scored")
              and run.metrics.get("per_functionality") is None and _same_data(run, runs[baseline_label])}
    # a re-thresholded run has the same scores as its source: one curve each
    distinct = {label: run for label, run in scored.items() if not run.metrics.get("run", {}).get("rethresholded_from")}
    sections = [_verdict(comparison, runs, notes), _overall(comparison), _all_runs(runs), _groups(comparison, pair)]
    sections.append(Section("Where the errors are", [
        Plot("confusion_matrices", "Confusion matrices (rows: true label; columns: prediction).",
             plots.confusion_matrices(scored or pair)),
        Plot("roc_curves", "ROC curves of every scored run on the same data.", plots.roc_curves(distinct or pair)),
        Plot("score_histograms", "P(hate) by group: a good model separates the two colours in every group.",
             plots.score_histograms(pair)),
        Plot("calibration_curve", "Calibration: how often a post with a given P(hate) is hate.",
             plots.calibration_curves(distinct or pair)),
    ]))
    if training_summary is not None:
        sections.append(_training(training_summary))
    if calibrations:
        sections.append(_calibrations(calibrations))
    suites = {label: run for label, run in runs.items() if run.metrics.get("per_functionality")}
    if suites:
        sections.append(_functional(suites))
    sections.append(_cases(comparison))
    sections.append(_provenance(comparison, runs))
    return sections


# ---- sections -------------------------------------------------------------------------------------------


def _verdict(comparison: dict, runs: dict[str, FinishedRun], notes: list[str]) -> Section:
    blocks: list = []
    samples = {label: run.metrics.get("run", {}).get("max_samples") for label, run in runs.items()}
    sampled = {label: n for label, n in samples.items() if n}
    if sampled:
        listed = ", ".join(f"{label}: {n}" for label, n in sampled.items())
        blocks.append(Callout(f"QUICK RUN: figures come from small stratified samples ({listed} rows), not from the "
                              "full splits. Use them to check the pipeline, never to judge a model."))
    blocks += list(notes)
    mcnemar = comparison["mcnemar"]
    f1 = comparison["overall"]["f1"]
    blocks.append(f"Verdict: **{comparison['verdict']}**. F1 went from {num(f1['baseline'])} to "
                  f"{num(f1['finetuned'])} ({signed(f1['delta'])}; paired 95% CI "
                  f"{interval(comparison['paired_bootstrap']['f1']['ci'], sign=True)}) on {comparison['n']} examples; "
                  f"McNemar's exact test p = {mcnemar['p_value']:.3g} "
                  f"({mcnemar['c']} rows fixed, {mcnemar['b']} broken).")
    rows = [[result["description"], result["figure"], result["target"], result["status"]]
            for result in comparison["criteria"]]
    blocks.append(Table(["criterion", "figure", "target", "status"], rows))
    if not success_criteria.passed(comparison["criteria"]):
        blocks.append("At least one criterion failed: `hatelens compare` exits with code 1.")
    return Section("Verdict and success criteria", blocks)


def _overall(comparison: dict) -> Section:
    bootstrap = comparison["paired_bootstrap"]
    rows = []
    for name, entry in comparison["overall"].items():
        delta_ci = bootstrap[name]["ci"] if name in ("f1", "accuracy") else None
        rows.append([name, f"{num(entry['baseline'])} {interval(entry['baseline_ci'])}",
                     f"{num(entry['finetuned'])} {interval(entry['finetuned_ci'])}",
                     signed(entry["delta"]), percent(entry["relative"]), interval(delta_ci, sign=True) if delta_ci else ""])
    return Section("Before vs after fine-tuning", [
        "Each figure with its 95% bootstrap interval; the last column is the paired interval of the difference "
        "(the same resampled rows for both models).",
        Table(["metric", "baseline", "fine-tuned", "Δ", "relative", "paired 95% CI of Δ"], rows)])


def _all_runs(runs: dict[str, FinishedRun]) -> Section:
    header = ["run", "data", "n", "F1", "accuracy", "precision", "recall", "FPR", "FNR", "ROC-AUC", "thresholds"]
    rows = []
    for label, run in runs.items():
        metrics = run.metrics
        rows.append([label, _data_name(run), str(metrics["n"]), *(num(metrics.get(name)) for name in
                     ("f1", "accuracy", "precision", "recall", "fpr", "fnr", "roc_auc")), _thresholds(run)])
    return Section("Every run in one table", [
        "The references are the small MiniLM-L6 encoder: frozen, with a logistic regression on its sentence "
        "embeddings, and (when run) with every weight fine-tuned on the training split. If an LLM does not beat "
        "them, it does not earn its cost.", Table(header, rows)])


def _groups(comparison: dict, pair: dict[str, FinishedRun]) -> Section:
    bootstrap = comparison["paired_bootstrap"]["groups"]
    rows = []
    for group, entry in comparison["per_group"].items():
        row = [group, str(entry["n"])]
        for rate in GROUP_RATES:
            row += [num(entry[rate]["baseline"]), num(entry[rate]["finetuned"]), signed(entry[rate]["delta"]),
                    interval(bootstrap.get(group, {}).get(rate, {}).get("ci"), sign=True)]
        rows.append(row)
    header = ["group", "n", "FPR before", "FPR after", "ΔFPR", "95% CI", "FNR before", "FNR after", "ΔFNR", "95% CI"]
    return Section("Per group: who pays for the errors", [
        "FPR: normal posts flagged as hate (over-moderation of the group's own speech). FNR: hate that got "
        "through. Intervals of Δ are paired bootstrap intervals within the group.",
        Table(header, rows),
        Plot("group_rates", "Per-group FPR and FNR, before and after, with 95% bootstrap intervals.",
             plots.group_rates(pair))])


def _training(training_summary: dict) -> Section:
    curves = success_criteria.loss_history(training_summary)
    facts = [[key, _fact(value)] for key, value in training_summary.items()
             if isinstance(value, (int, float, str)) and not isinstance(value, bool)]
    blocks: list = []
    if curves["train"] or curves["eval"]:
        blocks.append(Plot("loss_curves", "Training and validation loss.", plots.loss_curves(curves)))
    if facts:
        blocks.append(Table(["training", "value"], facts))
    return Section("Fine-tuning", blocks)


def _objective(calibration: dict) -> str:
    """e.g. "group_budget FPR ≤ 0.20, FNR ≤ 0.25 (not met: lgbtq)"."""
    caps = [f"{rate.upper()} ≤ {calibration[f'max_group_{rate}']:.2f}" for rate in ("fpr", "fnr")
            if calibration.get(f"max_group_{rate}") is not None]
    unmet = calibration.get("budget_unmet")
    return " ".join([calibration["objective"], ", ".join(caps), f"(not met: {', '.join(unmet)})" if unmet else ""]).strip()


def _calibrations(calibrations: list[dict]) -> Section:
    rows = []
    for calibration in calibrations:
        per_group = calibration.get("validation_per_group", {})
        rows.append([_objective(calibration),
                     num(calibration["threshold"]),
                     ", ".join(f"{group} {num(value)}" for group, value in calibration["per_group"].items()) or "—",
                     num(calibration["validation_f1"]),
                     signed(calibration["validation_f1"] - calibration["unconstrained_f1"]),
                     ", ".join(f"{group} {num(entry['fpr'])}" for group, entry in per_group.items())])
    return Section("Decision thresholds (fitted on the validation split)", [
        "ΔF1 = validation F1 under the objective's thresholds minus the F1 of the best single threshold: "
        "what a fairness constraint costs in F1 (negative: a cost).",
        Table(["objective", "global threshold", "per-group thresholds", "validation F1", "ΔF1 vs best threshold",
               "validation FPR by group"], rows)])


def _functional(suites: dict[str, FinishedRun]) -> Section:
    names = sorted({name for run in suites.values() for name in run.metrics["per_functionality"]})
    rows = []
    for name in names:
        entries = [run.metrics["per_functionality"].get(name) for run in suites.values()]
        first = next(entry for entry in entries if entry)
        rows.append([name, first["label"], str(first["n"]), *(num(entry["accuracy"]) if entry else "—"
                                                               for entry in entries)])
    return Section("Functional tests (accuracy per functionality)", [
        "HateCheck-style cases from suites/functional/templates.yaml: identity mentions, counter-speech, quoting, "
        "negation, reclaimed terms and plain hate for each group. `*_nh` cases are not hate, `*_h` cases are.",
        Table(["functionality", "label", "n", *suites], rows)])


def _cases(comparison: dict) -> Section:
    cases = comparison["cases"]
    shown: list = []
    for kind in ("fixed", "broken"):
        rows = [[case["id"], case["group"], case["label"], f"{case['baseline_prediction']} ({num(case['baseline_score'])})",
                 f"{case['finetuned_prediction']} ({num(case['finetuned_score'])})", _cut(case["text"])]
                for case in cases[f"top_{kind}"]]
        shown.append(f"Top {len(rows)} {kind} cases:")
        shown.append(Table(["id", "group", "label", "baseline", "fine-tuned", "text"], rows))
    return Section("Cases where fine-tuning fixed or broke a prediction", [
        Callout(OFFENSIVE_WARNING),
        f"{cases['fixed']} cases fixed by fine-tuning, {cases['broken']} broken; all of them are in {cases['csv']}. "
        "The largest score changes first.",
        Folded("Show the cases (offensive content)", shown)])


def _provenance(comparison: dict, runs: dict[str, FinishedRun]) -> Section:
    rows = [[label, str(run.run_dir), str(run.metrics.get("run", {}).get("model_version")), run.data_file]
            for label, run in runs.items()]
    return Section("Where every figure comes from", [
        Table(["run", "folder", "model", "data"], rows),
        f"Bootstrap: {comparison['paired_bootstrap']['n_bootstrap']} resamples, seed "
        f"{comparison['paired_bootstrap']['seed']}. Every folder holds config.yaml and manifest.json (versions, "
        "commit, data hashes)."])


# ---- formatting -------------------------------------------------------------------------------------------


def _same_data(run: FinishedRun, other: FinishedRun) -> bool:
    return run.data_file == other.data_file


def _data_name(run: FinishedRun) -> str:
    samples = run.metrics.get("run", {}).get("max_samples")
    name = run.data_file.rsplit("/", 1)[-1]
    return f"{name} (sample of {samples})" if samples else name


def _thresholds(run: FinishedRun) -> str:
    thresholds = run.metrics.get("run", {}).get("thresholds") or {}
    if "threshold" not in thresholds:
        return "—"
    per_group = thresholds.get("per_group") or {}
    return num(thresholds["threshold"]) + (" + per group" if per_group else "")


def _fact(value) -> str:
    return num(value) if isinstance(value, float) else str(value)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CASE_TEXT_CHARS else text[:CASE_TEXT_CHARS - 1] + "…"

