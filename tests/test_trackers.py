"""`report_to`: evaluation metrics and comparison verdicts reach real local tracker stores, offline."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_evaluate import write_dataset

from hatelens import trackers
from hatelens.cli import main
from hatelens.config import EvalConfig, TrainConfig, load_config
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import evaluate
from hatelens.evaluation.metrics import compute_metrics

METRICS = compute_metrics(["hate", "normal", "normal", "hate"], ["hate", "hate", "normal", "normal"],
                          [0.9, 0.6, 0.2, 0.4], ["lgbtq", "lgbtq", "mexican", "mexican"], n_bootstrap=10)


def scalars(folder) -> dict[str, float]:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag)[-1].value for tag in accumulator.Tags()["scalars"]}


def test_report_to_follows_trl_spellings():
    assert trackers.parse_report_to("none") == [] and trackers.parse_report_to(None) == []
    assert trackers.parse_report_to(["tensorboard", "MLflow"]) == ["tensorboard", "mlflow"]
    assert load_config(TrainConfig, None, ["report_to=[tensorboard, mlflow]"]).report_to == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match="report_to: unknown tracker.s. trackio; choose from tensorboard, mlflow, "
                                          "wandb or none"):
        trackers.parse_report_to("trackio")


def test_evaluation_metrics_land_in_tensorboard_event_files(tiny_llama_dir, tmp_path):
    data = write_dataset(tmp_path / "rows.jsonl", n=12)
    assert main(["baseline", "--model", str(tiny_llama_dir), "--data", str(data), "--output-dir",
                 str(tmp_path / "runs"), "--quiet", "n_bootstrap=10", "report_to=tensorboard"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    logged = scalars(run_dir / "tensorboard")
    assert logged["eval/f1"] == pytest.approx(metrics["f1"])
    for group in ("lgbtq", "mexican", "middle_east"):
        assert logged[f"eval/{group}/fpr"] == pytest.approx(metrics["per_group"][group]["fpr"])
        assert logged[f"eval/{group}/fnr"] == pytest.approx(metrics["per_group"][group]["fnr"])


def test_a_bad_tracker_name_fails_before_scoring(tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker"):
        evaluate(EvalConfig(data=str(tmp_path / "never_read.jsonl"), report_to="tensorbored"))


def test_metrics_and_verdict_reach_an_mlflow_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    trackers.log("mlflow", tmp_path / "run_a", "baseline_test", trackers.evaluation_figures(METRICS),
                 params={"model": "tiny"})
    comparison = {"overall": {"f1": {"delta": 0.05}},
                  "criteria": [{"name": "finetuned_f1_min", "status": "PASS"},
                               {"name": "group_fpr_max.lgbtq", "status": "FAIL"},
                               {"name": "baseline_f1_expected", "status": "SKIP"}]}
    trackers.log(["mlflow"], tmp_path / "cmp", "comparison", trackers.comparison_figures(comparison, passed=False))
    client = mlflow.tracking.MlflowClient(store.as_uri())
    found = {run.info.run_name: run for run in client.search_runs(experiment_ids=["0"])}
    evaluation = found["baseline_test"].data
    assert evaluation.metrics["eval/f1"] == pytest.approx(METRICS["f1"])
    assert evaluation.metrics["eval/lgbtq/fpr"] == pytest.approx(1.0)
    assert evaluation.metrics["eval/mexican/fnr"] == pytest.approx(1.0)
    assert evaluation.params == {"model": "tiny"}
    assert found["comparison"].data.metrics == {"compare/passed": 0.0, "compare/f1_delta": 0.05,
                                                "compare/criterion/finetuned_f1_min": 1.0,
                                                "compare/criterion/group_fpr_max.lgbtq": 0.0}
