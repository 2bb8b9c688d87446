"""compare(): joined by id, deltas, McNemar, paired intervals, fixed/broken cases, criteria, exit codes."""

import csv
import json

import pytest
from fixtures import LexiconClassifier, make_run, tiny_llama_classifier, write_dataset
from scipy.stats import binomtest

from hatelens.cli import main
from hatelens.errors import ConfigError, DataError
from hatelens.evaluation.compare import compare
from hatelens.evaluation.criteria import load_criteria

FALLING = {"log_history": [{"epoch": 0.5, "loss": 2.0}, {"epoch": 1.0, "eval_loss": 1.5},
                           {"epoch": 1.5, "loss": 1.0}, {"epoch": 2.0, "eval_loss": 1.1}]}
RISING = {"epochs": [{"epoch": 1, "train_loss": 1.0, "eval_loss": 0.9}, {"epoch": 2, "train_loss": 0.7, "eval_loss": 1.2}]}


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tmp_path_factory):
    """A weak baseline (tiny random Llama) and a strong 'fine-tuned' model on the same 90 rows."""
    folder = tmp_path_factory.mktemp("compare")
    data = write_dataset(folder / "validation.jsonl", n=90)
    baseline = make_run(data, folder / "runs", tiny_llama_classifier(tiny_llama_dir))
    finetuned = make_run(data, folder / "runs", LexiconClassifier())
    return {"data": data, "baseline": baseline, "finetuned": finetuned, "folder": folder}


def predictions(run_dir):
    return {row["id"]: row for row in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())}


def test_deltas_mcnemar_and_cases_agree_with_the_prediction_files(runs, tmp_path):
    result = compare(runs["baseline"], runs["finetuned"], output_dir=tmp_path / "cmp", n_bootstrap=200)
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison == json.loads(json.dumps(result.comparison))
    base, tuned = predictions(runs["baseline"]), predictions(runs["finetuned"])
    metrics_a = json.loads((runs["baseline"] / "metrics.json").read_text())
    metrics_b = json.loads((runs["finetuned"] / "metrics.json").read_text())
    for name in ("f1", "accuracy", "precision", "recall", "fpr", "fnr", "roc_auc", "pr_auc"):
        entry = comparison["overall"][name]
        assert entry["delta"] == pytest.approx(metrics_b[name] - metrics_a[name])
        if metrics_a[name]:
            assert entry["relative"] == pytest.approx((metrics_b[name] - metrics_a[name]) / metrics_a[name])
        else:  # the random baseline calls everything hate: FNR 0, and no relative change from 0
            assert entry["relative"] is None
    for group in ("lgbtq", "mexican", "middle_east"):
        assert comparison["per_group"][group]["fpr"]["delta"] == pytest.approx(
            metrics_b["per_group"][group]["fpr"] - metrics_a["per_group"][group]["fpr"])

    right_a = {key: row["prediction"] == row["label"] for key, row in base.items()}
    right_b = {key: row["prediction"] == row["label"] for key, row in tuned.items()}
    fixed = {key for key in base if right_b[key] and not right_a[key]}
    broken = {key for key in base if right_a[key] and not right_b[key]}
    assert (comparison["mcnemar"]["c"], comparison["mcnemar"]["b"]) == (len(fixed), len(broken))
    assert comparison["mcnemar"]["p_value"] == pytest.approx(
        binomtest(len(broken), len(fixed) + len(broken), 0.5).pvalue)

    with open(result.cases_path) as file:
        cases = list(csv.DictReader(file))
    assert {row["id"] for row in cases if row["change"] == "fixed"} == fixed
    assert {row["id"] for row in cases if row["change"] == "broken"} == broken
    for row in cases:
        assert row["text"] == base[row["id"]]["text"]
        assert row["finetuned_prediction"] == tuned[row["id"]]["prediction"]
        assert float(row["baseline_score"]) == pytest.approx(base[row["id"]]["score"])


def test_paired_intervals_bracket_their_delta(runs, tmp_path):
    comparison = compare(runs["baseline"], runs["finetuned"], output_dir=tmp_path / "cmp", n_bootstrap=300).comparison
    bootstrap = comparison["paired_bootstrap"]
    for entry in (bootstrap["f1"], bootstrap["accuracy"], *(
            bootstrap["groups"][group][rate] for group in ("lgbtq", "mexican", "middle_east") for rate in ("fpr", "fnr"))):
        low, high = entry["ci"]
        assert low <= entry["delta"] <= high
    assert bootstrap["f1"]["delta"] == pytest.approx(comparison["overall"]["f1"]["delta"])
    assert bootstrap["accuracy"]["ci"][0] > 0  # the lexicon model is far better than a random one


def test_a_clear_improvement_passes_every_criterion_and_exits_0(runs, tmp_path, capsys):
    summary = tmp_path / "training_summary.json"
    summary.write_text(json.dumps(FALLING))
    code = main(["compare", str(runs["baseline"]), str(runs["finetuned"]), "--output-dir", str(tmp_path / "cmp"),
                 "--training-summary", str(summary), "--no-report", "--n-bootstrap", "100"])
    output = capsys.readouterr().out
    assert code == 0, output
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    statuses = {result["name"]: result["status"] for result in comparison["criteria"]}
    assert statuses == {"baseline_f1": "SKIP", "finetuned_f1": "PASS", "improvement": "PASS", "fpr_lgbtq": "PASS",
                        "validation_loss": "PASS"}
    assert "Verdict: PASS" in output
    assert "1.5000 -> 1.1000" in output


def test_the_reverse_comparison_fails_and_exits_1(runs, tmp_path, capsys):
    code = main(["compare", str(runs["finetuned"]), str(runs["baseline"]), "--output-dir", str(tmp_path / "cmp"),
                 "--no-report", "--n-bootstrap", "50"])
    assert code == 1
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    statuses = {result["name"]: result["status"] for result in comparison["criteria"]}
    assert statuses["improvement"] == "FAIL"
    assert statuses["validation_loss"] == "SKIP"  # no training summary given: not checkable, not failed
    assert "Verdict: FAIL" in capsys.readouterr().out


def test_criteria_figures_decide_pass_and_fail(runs, tmp_path):
    tuned_f1 = json.loads((runs["finetuned"] / "metrics.json").read_text())["f1"]
    base_f1 = json.loads((runs["baseline"] / "metrics.json").read_text())["f1"]
    criteria = load_criteria(None, [f"baseline_f1_expected={base_f1 + 0.005}", f"finetuned_f1_min={tuned_f1 + 0.001}",
                                    "group_fpr_max.lgbtq=0.0", "group_fpr_max.mexican=1.0"])
    comparison = compare(runs["baseline"], runs["finetuned"], criteria=criteria, training_summary=RISING,
                         output_dir=tmp_path / "cmp", n_bootstrap=20).comparison
    statuses = {result["name"]: result["status"] for result in comparison["criteria"]}
    lgbtq_fpr = comparison["per_group"]["lgbtq"]["fpr"]["finetuned"]
    assert lgbtq_fpr > 0  # the lexicon model has false positives in every group, by construction
    assert statuses == {"baseline_f1": "PASS", "finetuned_f1": "FAIL", "improvement": "PASS", "fpr_lgbtq": "FAIL",
                        "fpr_mexican": "PASS", "validation_loss": "FAIL"}
    assert comparison["verdict"] == "FAIL"


def test_runs_on_different_examples_are_refused_with_the_counts(runs, tmp_path):
    other = make_run(write_dataset(tmp_path / "other.jsonl", n=60, start=30), tmp_path / "runs", LexiconClassifier())
    expected = (f"the runs hold different examples: baseline {runs['baseline']} has 90, fine-tuned {other} has 60; "
                "30 only in the baseline, 0 only in the fine-tuned run (e.g. row0); evaluate both on the same data "
                "file, max_samples and seed")
    with pytest.raises(DataError) as error:
        compare(runs["baseline"], other, output_dir=tmp_path / "cmp")
    assert str(error.value) == expected


def test_an_unfinished_run_is_refused(runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "predictions.jsonl").write_text((runs["finetuned"] / "predictions.jsonl").read_text())
    with pytest.raises(DataError, match="has no metrics.json: not a finished evaluation run"):
        compare(runs["baseline"], unfinished, output_dir=tmp_path / "cmp")


def test_default_output_is_a_new_folder_beside_the_baseline(runs):
    result = compare(runs["baseline"], runs["finetuned"], n_bootstrap=10)
    assert result.output_dir.parent == runs["baseline"].parent
    assert result.output_dir.name.endswith("_compare")
    assert {"comparison.json", "cases.csv", "summary.txt", "manifest.json", "config.yaml"} <= {
        path.name for path in result.output_dir.iterdir()}


def test_unknown_criterion_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key"):
        load_criteria(None, ["finetuned_f1_minimum=0.7"])
    with pytest.raises(ConfigError, match="group_fpr_max.lgbtq is 1.5; give an FPR cap between 0 and 1"):
        load_criteria(None, ["group_fpr_max.lgbtq=1.5"])


def test_default_criteria_file_holds_the_dataclass_defaults():
    assert load_criteria("configs/criteria/default.yaml") == load_criteria(None)


def test_group_caps_are_data_and_a_named_cap_keeps_the_others():
    criteria = load_criteria(None, ["group_fpr_max.mexican=0.4", "group_fpr_max.women=0.2"])
    assert criteria["group_fpr_max"] == {"lgbtq": 0.35, "mexican": 0.4, "middle_east": None, "women": 0.2}
    with pytest.raises(ConfigError, match="group_fpr_max.lgbtq is 'high'; give an FPR cap between 0 and 1"):
        load_criteria(None, ["group_fpr_max.lgbtq=high"])
