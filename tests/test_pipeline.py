"""`hatelens run` end to end on a tiny model: every step's folder, the verdict, resuming."""

import json

import pytest
from fixtures import separable_rows, write_jsonl

from hatelens import resources
from hatelens.config import RunConfig, load_config
from hatelens.pipeline import run_pipeline

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

STEPS = ("01_baseline_validation", "02_train", "03_finetuned_validation", "04_baseline_test", "05_finetuned_test",
         "06_baseline_test_calibrated", "07_finetuned_test_calibrated", "10_comparison")


@pytest.fixture
def run_config(tiny_llama_dir, tmp_path) -> RunConfig:
    recipe = tmp_path / "tiny_recipe.yaml"
    recipe.write_text("epochs: 2\nbatch_size: 4\ngrad_accum: 1\nlearning_rate: 0.01\neval_batch_size: 8\n"
                      "logging_steps: 1\neval_on_start: true\nlora:\n  r: 4\n  alpha: 8\n")
    test_rows = [{**row, "id": f"test{index}"} for index, row in enumerate(separable_rows(24))]
    return load_config(RunConfig, None, [
        f"model={tiny_llama_dir}", "template=compact", f"train_recipe={recipe}",
        f"train_data={write_jsonl(tmp_path / 'train.jsonl', separable_rows(12))}",
        f"validation_data={write_jsonl(tmp_path / 'validation.jsonl', separable_rows(12))}",
        f"test_data={write_jsonl(tmp_path / 'test.jsonl', test_rows)}",
        f"output_dir={tmp_path / 'runs'}", "reference=false", "functional_suite=null", "n_bootstrap=50",
        "batch_size=8",
    ])


def test_run_walks_every_step_and_writes_a_report(run_config, tiny_bert_dir, monkeypatch, tmp_path):
    from dataclasses import replace

    from hatelens.backends import reference

    monkeypatch.setattr(reference, "encoder_folder", lambda: tiny_bert_dir)  # a tiny BERT for the MiniLM encoder
    suite = tmp_path / "suite.csv"  # a few cases of every group from the shipped functional suite
    lines = (resources.find("suites", "suites/functional/hatelens_functional.csv")).read_text().splitlines()
    suite.write_text("\n".join(lines[:1] + [line for line in lines[1:] if "-01," in line][:12]) + "\n")
    result = run_pipeline(replace(run_config, reference_finetuned=True, functional_suite=str(suite)), progress=False)
    for step in (*STEPS, "08_reference_finetuned_test", "09_finetuned_functional_suite",
                 "09_finetuned_functional_suite_calibrated"):
        assert (result.run_dir / step).is_dir(), step
    assert not (result.run_dir / "08_reference_test").exists()  # reference=false: that kind is not run
    assert result.report_html.is_file()
    assert "| reference (MiniLM-L6 fully fine-tuned) | test.jsonl |" in (result.run_dir / "10_comparison" / "report.md"
                                                                        ).read_text()
    verdict = json.loads((result.run_dir / "verdict.json").read_text())
    comparison = json.loads((result.run_dir / "10_comparison" / "comparison.json").read_text())
    assert verdict["passed"] == comparison["passed"] == all(c["status"] != "FAIL" for c in comparison["criteria"])
    assert verdict["criteria"] == comparison["criteria"]  # the verdict is the comparison's, not computed apart
    assert [criterion["name"] for criterion in verdict["criteria"]] == [
        "baseline_f1", "finetuned_f1", "improvement", "fpr_lgbtq", "validation_loss"]  # the default criteria
    thresholds = json.loads((result.run_dir / "03_finetuned_validation" / "thresholds.json").read_text())
    calibrated = json.loads((result.run_dir / "07_finetuned_test_calibrated" / "metrics.json").read_text())
    assert calibrated["run"]["thresholds"]["threshold"] == pytest.approx(thresholds["threshold"])
    # the test split is never what a threshold was fitted on
    assert "validation" in thresholds["source_run"]
    # the suite is reported under the thresholds the run ships too
    suite_calibrated = json.loads((result.run_dir / "09_finetuned_functional_suite_calibrated" / "metrics.json"
                                   ).read_text())
    assert suite_calibrated["run"]["thresholds"]["threshold"] == pytest.approx(thresholds["threshold"])
    assert suite_calibrated["per_functionality"] and suite_calibrated["n"] == 12
    assert "| fine-tuned, functional suite, calibrated |" in (result.run_dir / "10_comparison" / "report.md").read_text()


def test_the_validation_steps_are_the_scores_training_computed(run_config, tmp_path):
    """Training scored validation before its first step (the base model) and at its best checkpoint, as the
    evaluator does: the run's validation steps take those scores instead of scoring the split twice more, and
    they are the scores the evaluator gives the same models."""
    from hatelens.config import EvalConfig, ModelConfig
    from hatelens.evaluation.evaluate import evaluate

    result = run_pipeline(run_config, progress=False)
    summary = json.loads(next((result.run_dir / "02_train").glob("*/training_summary.json")).read_text())
    for step, adapter, training_step in (("01_baseline_validation", None, 0),
                                         ("03_finetuned_validation", summary["adapter_dir"], summary["best"]["step"])):
        recorded = json.loads((result.run_dir / step / "metrics.json").read_text())
        assert recorded["run"]["scores_from"].endswith(f"its evaluation at step {training_step}")
        fresh = evaluate(EvalConfig(data=run_config.validation_data, output_dir=str(tmp_path / step), n_bootstrap=50,
                                    model=ModelConfig(model=run_config.model, adapter=adapter, template="compact",
                                                      batch_size=8)), progress=False)
        assert "scores_from" not in fresh.metrics["run"]
        assert recorded["run"]["model_version"] == fresh.metrics["run"]["model_version"]
        rows = [json.loads(line) for line in (result.run_dir / step / "predictions.jsonl").read_text().splitlines()]
        again = [json.loads(line) for line in (fresh.run_dir / "predictions.jsonl").read_text().splitlines()]
        assert [row["id"] for row in rows] == [row["id"] for row in again]
        assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in again], abs=1e-5)
    base = json.loads((result.run_dir / "01_baseline_validation" / "predictions.jsonl").read_text().splitlines()[0])
    tuned = json.loads((result.run_dir / "03_finetuned_validation" / "predictions.jsonl").read_text().splitlines()[0])
    assert base["score"] != pytest.approx(tuned["score"], abs=1e-4)  # two different models' scores


def test_rerun_after_finishing_steps_keeps_them(run_config):
    first = run_pipeline(run_config, progress=False)
    (first.run_dir / "verdict.json").unlink()  # as if interrupted just before the end
    (first.run_dir / "05_finetuned_test" / "metrics.json").unlink()
    kept = [first.run_dir / "01_baseline_validation" / "metrics.json",
            next((first.run_dir / "02_train").glob("*/training_summary.json"))]
    stamps = {path: path.stat().st_mtime_ns for path in kept}
    second = run_pipeline(run_config, progress=False)
    assert second.run_dir == first.run_dir
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, path
    assert (second.run_dir / "05_finetuned_test" / "metrics.json").is_file()
    assert second.verdict.report_html.is_file()
    assert not first.verdict.resumed and second.verdict.resumed  # its wall time counts this invocation only
    assert "which resumed an earlier one" in (second.run_dir / "10_comparison" / "report.md").read_text()


def test_the_training_step_gets_the_run_settings_as_values_and_the_overrides_last(run_config, tmp_path):
    from dataclasses import replace

    from hatelens.pipeline import Steps

    config = replace(run_config, train_overrides=["epochs=1", "lora.r=2"])
    train_config = Steps(config, tmp_path / "root", progress=False).train_config("02_train")
    assert (train_config.model, train_config.template, train_config.train_file, train_config.val_file) == \
        (config.model, "compact", config.train_data, config.validation_data)
    assert (train_config.output_dir, train_config.name) == (str(tmp_path / "root" / "02_train"), "train")
    assert (train_config.epochs, train_config.lora.r, train_config.lora.alpha) == (1.0, 2, 8)  # recipe said 2, 4, 8
