"""report.md + single-file report.html: content, embedded plots, and a real headless Chromium render."""

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures import LexiconClassifier, make_run, tiny_llama_classifier, write_dataset
from PIL import Image

from hatelens.cli import main
from hatelens.data.suites import SUITE_CSV
from hatelens.evaluation.calibrate import calibrate
from hatelens.evaluation.compare import compare
from hatelens.report.content import OFFENSIVE_WARNING
from hatelens.report.writer import write_report

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"wall_s": 42.5, "trainable_parameters": 1234,
            "log_history": [{"epoch": 0.5, "loss": 2.0}, {"epoch": 1.0, "loss": 1.4}, {"epoch": 1.0, "eval_loss": 1.5},
                            {"epoch": 2.0, "loss": 0.9}, {"epoch": 2.0, "eval_loss": 1.1}]}
PLOTS = ("confusion_matrices", "roc_curves", "score_histograms", "calibration_curve", "group_rates", "loss_curves")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0")


@pytest.fixture(scope="module")
def report(tiny_llama_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    test = write_dataset(folder / "test.jsonl", n=60)
    validation = make_run(write_dataset(folder / "validation.jsonl", n=60, start=100), folder / "runs",
                          LexiconClassifier(steepness=0.4))
    baseline = make_run(test, folder / "runs", tiny_llama_classifier(tiny_llama_dir))
    finetuned = make_run(test, folder / "runs", LexiconClassifier(steepness=0.4))
    reference = make_run(test, folder / "runs", LexiconClassifier(steepness=2.0))
    suite = make_run(ROOT / SUITE_CSV, folder / "runs", LexiconClassifier(), format="hatecheck")
    calibration = calibrate(validation, objective="max_group_fpr", max_group_fpr=0.2)
    calibrated = make_run(test, folder / "runs", LexiconClassifier(steepness=0.4), thresholds=str(calibration.path))
    result = compare(baseline, finetuned, training_summary=TRAINING, output_dir=folder / "cmp", n_bootstrap=50)
    md_path, html_path = write_report(folder / "cmp", result.comparison, baseline, finetuned, TRAINING,
                                      reference_runs=[reference],
                                      extra_runs={"fine-tuned, calibrated": calibrated, "functional suite": suite},
                                      calibrations=[calibration.details], notes=["Pipeline wall time: 1.0 min."])
    return {"md": md_path, "html": html_path, "comparison": result.comparison, "folder": folder, "test": test,
            "calibration": calibration.details,
            "baseline": baseline, "finetuned": finetuned}


def test_markdown_holds_every_section_and_links_existing_plots(report):
    text = report["md"].read_text()
    for heading in ("Verdict and success criteria", "Before vs after fine-tuning", "Every run in one table",
                    "Per group", "Where the errors are", "Fine-tuning", "Decision thresholds", "Functional tests",
                    "Cases where fine-tuning fixed or broke a prediction", "Where every figure comes from"):
        assert f"## {heading}" in text
    linked = re.findall(r"\]\((plots/[a-z_]+\.png)\)", text)
    assert sorted(Path(link).stem for link in linked) == sorted(PLOTS)
    for link in linked:
        Image.open(report["md"].parent / link).verify()
    assert OFFENSIVE_WARNING in text
    assert "Pipeline wall time: 1.0 min." in text
    assert "reference (MiniLM-L6 + logistic regression)" in text and "fine-tuned, calibrated" in text
    assert "QUICK RUN" not in text
    for case in report["comparison"]["cases"]["top_fixed"]:
        assert case["id"] in text


def test_html_is_one_self_contained_file_with_valid_embedded_pngs(report):
    html = report["html"].read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(PLOTS)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert not re.search(r'(href|src)="(https?:|//)', html)  # nothing fetched from the network
    assert "<script" not in html
    # texts from the data are escaped, never markup
    assert "<td>PASS</td>" not in html and 'class="PASS"' in html


def test_criteria_table_shows_each_verdict_with_its_figure(report):
    text = report["md"].read_text()
    for result in report["comparison"]["criteria"]:
        assert f"| {result['description']} | {result['figure']} | {result['target']} | {result['status']} |" in text


def test_a_sampled_run_is_labelled_quick_and_a_run_without_scores_is_drawn(report, tmp_path):
    baseline = make_run(report["test"], tmp_path / "runs", LexiconClassifier(mode="generate"), max_samples=30)
    finetuned = make_run(report["test"], tmp_path / "runs", LexiconClassifier(steepness=2.0), max_samples=30)
    comparison = compare(baseline, finetuned, output_dir=tmp_path / "cmp", n_bootstrap=20).comparison
    md_path, html_path = write_report(tmp_path / "cmp", comparison, baseline, finetuned)
    assert "QUICK RUN: figures come from small stratified samples (baseline: 30, fine-tuned: 30 rows)" in md_path.read_text()
    assert "QUICK RUN" in html_path.read_text()
    assert "## Fine-tuning" not in md_path.read_text()  # no training summary, no loss section
    assert "| baseline | test.jsonl (sample of 30) | 30 |" in md_path.read_text()  # generate mode: no AUC, still listed


def test_report_command_rebuilds_the_report_of_a_comparison_folder(report, tmp_path, capsys):
    folder = tmp_path / "cmp"
    shutil.copytree(report["folder"] / "cmp", folder)
    (folder / "report.html").unlink()
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps(report["calibration"]))
    assert main(["report", str(folder), "--run", f"again={report['finetuned']}", "--thresholds", str(thresholds)]) == 0
    assert (folder / "report.html").is_file()
    text = (folder / "report.md").read_text()
    assert "| again |" in text and "| max_group_fpr FPR ≤ 0.20 |" in text
    assert "plots/loss_curves.png" in text  # the training summary kept in comparison.json


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(chromium() is None, reason="Debian's `chromium` is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    # the check can fail: a page with a script error shows up in Chromium's console log
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                      "<body><script>undefinedFunction();</script></body></html>")
    assert any("undefinedFunction" in line for line in console_messages(render(broken, tmp_path, "--dump-dom").stderr))

    dumped = render(report["html"], tmp_path, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert console_messages(dumped.stderr) == []
    assert "Verdict and success criteria" in dumped.stdout
    assert dumped.stdout.count("<img") == len(PLOTS)

    screenshot = tmp_path / "report.png"
    shot = render(report["html"], tmp_path, "--window-size=1200,3000", f"--screenshot={screenshot}")
    assert shot.returncode == 0 and console_messages(shot.stderr) == []
    with Image.open(screenshot) as image:
        assert image.size == (1200, 3000)
        assert len(image.convert("L").getcolors(maxcolors=256)) > 20  # drawn, not a blank page
