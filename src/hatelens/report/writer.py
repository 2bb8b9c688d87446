"""The report a person reads: report.md (plots as PNG files beside it) and a single-file report.html.

    md_path, html_path = write_report(output_dir, comparison, baseline_run, finetuned_run, training_summary,
                                      reference_runs=[reference_run], extra_runs={"fine-tuned, F1 thresholds": run})

content.py decides what is said (sections of text, tables, plots), plots.py draws, render.py writes.
"""

from pathlib import Path
from typing import Sequence

from hatelens import runs
from hatelens.config.bounds import REFERENCE_KINDS
from hatelens.report.content import build_sections
from hatelens.report.render import to_html, to_markdown

BASELINE_LABEL = "baseline"
FINETUNED_LABEL = "fine-tuned"
DEFAULT_TITLE = "hatelens report: did fine-tuning make the classifier better, and for whom?"


def reference_label(kind: str) -> str:
    """How the report names a reference run of `kind` (ModelConfig.reference_kind; runs from before it: logistic)."""
    return f"reference ({REFERENCE_KINDS[kind]})"


def write_report(output_dir: str | Path, comparison: dict, baseline_run: str | Path, finetuned_run: str | Path,
                 training_summary: dict | None = None, reference_runs: Sequence[str | Path] = (),
                 extra_runs: dict[str, str | Path] | None = None, *, calibrations: list[dict] | None = None,
                 title: str = DEFAULT_TITLE, notes: list[str] | None = None) -> tuple[Path, Path]:
    """Write report.md, plots/*.png and report.html into output_dir; return (md_path, html_path).

    comparison: the contents of comparison.json (`compare(...).comparison`); baseline_run and
    finetuned_run: the two compared run folders; training_summary: the fine-tuning run's
    training_summary.json (loss curves), or None; reference_runs: `--backend reference` runs on the
    same data (each named by its kind), shown in the same tables; extra_runs: {label: run folder} of
    further runs to list (calibrated thresholds, the functional suite, ...); calibrations: thresholds.json
    contents from `calibrate` (their F1 cost is reported); notes: paragraphs put under the verdict (e.g. wall time).
    A run evaluated on a sample (max_samples) makes the report open with a QUICK RUN warning.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labelled = {BASELINE_LABEL: baseline_run, FINETUNED_LABEL: finetuned_run}
    loaded = {label: runs.load_finished_run(folder) for label, folder in labelled.items()}
    for folder in reference_runs:
        reference = runs.load_finished_run(folder)
        loaded[reference_label(reference.config.get("model", {}).get("reference_kind", "logistic"))] = reference
    loaded.update({label: runs.load_finished_run(folder) for label, folder in (extra_runs or {}).items()})
    sections = build_sections(comparison, loaded, baseline_label=BASELINE_LABEL, finetuned_label=FINETUNED_LABEL,
                              training_summary=training_summary, calibrations=list(calibrations or []),
                              notes=list(notes or []))
    md_path, html_path = output_dir / "report.md", output_dir / "report.html"
    runs.write_atomic(md_path, to_markdown(title, sections, output_dir))
    runs.write_atomic(html_path, to_html(title, sections))
    return md_path, html_path
