"""Evaluation into run folders: files, resume after an interruption, thresholds, leakage."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier
from hatelens.config import EvalConfig, ModelConfig
from hatelens.errors import DataError
from hatelens.evaluation.evaluate import evaluate, read_predictions

GROUPS = ("lgbtq", "mexican", "middle_east")


def write_dataset(path, n=36):
    with open(path, "w") as file:
        for index in range(n):
            file.write(json.dumps({"id": f"row{index}", "text": f"post number {index} " + "word " * (index % 7),
                                   "label": "hate" if index % 2 else "normal", "group": GROUPS[index % 3]}) + "\n")
    return path


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "eval.jsonl")


@pytest.fixture
def classifier(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return HFClassifier(model, tokenizer, prompts.load_template("baseline"), batch_size=2,
                        model_version="tiny-llama")


def make_config(dataset, output_dir, **fields):
    return EvalConfig(data=str(dataset), output_dir=str(output_dir), n_bootstrap=50,
                      model=ModelConfig(model="tiny", batch_size=2), **fields)


def test_run_folder_holds_everything_a_figure_needs(dataset, tmp_path, classifier):
    result = evaluate(make_config(dataset, tmp_path / "runs"), classifier=classifier, progress=False)
    files = {path.name for path in result.run_dir.iterdir()}
    assert {"config.yaml", "manifest.json", "predictions.jsonl", "metrics.json", "summary.txt"} <= files
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data_sha256"] and manifest["prompt_sha256"] and manifest["versions"]["torch"]
    assert manifest["model_version"] == "tiny-llama"
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 36 and {"id", "group", "label", "score", "prediction"} <= set(rows[0])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["per_group"]) == set(GROUPS)
    for key in ("f1", "precision", "recall", "accuracy", "fpr", "fnr", "roc_auc", "invalid_rate"):
        assert key in metrics
    assert f"Target to beat: F1 0.615 -> this run {metrics['f1']:.3f}" in result.summary


class Interrupting:
    """Wraps a classifier and raises KeyboardInterrupt after `calls` batches, like Ctrl-C."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls
        self.model_version, self.mode = inner.model_version, inner.mode

    def classify(self, texts, groups=None):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.inner.classify(texts, groups)


def test_interrupted_run_resumes_and_ends_with_the_same_numbers(dataset, tmp_path, classifier):
    whole = evaluate(make_config(dataset, tmp_path / "whole"), classifier=classifier, progress=False)

    config = make_config(dataset, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, classifier=Interrupting(classifier, calls=2), progress=False)
    (interrupted,) = (tmp_path / "resumed").iterdir()
    assert not (interrupted / "metrics.json").exists()  # no half-written results
    written = len(read_predictions(interrupted / "predictions.jsonl"))
    assert 0 < written < 36
    # a kill -9 in the middle of a write leaves half a line: it is cut off, that row scored again
    with open(interrupted / "predictions.jsonl", "a") as file:
        file.write('{"id": "row35", "gro')

    resumed = evaluate(config, classifier=classifier, progress=False)
    assert resumed.run_dir == interrupted
    assert resumed.resumed_rows == written
    for key in ("f1", "accuracy", "roc_auc", "fpr", "fnr"):
        assert resumed.metrics[key] == whole.metrics[key]
    scores = {row["id"]: row["score"] for row in read_predictions(resumed.run_dir / "predictions.jsonl").values()}
    expected = {row["id"]: row["score"] for row in read_predictions(whole.run_dir / "predictions.jsonl").values()}
    assert scores == expected
    assert resumed.metrics["ci"] == whole.metrics["ci"]  # bootstrap resamples rows by position: same order
    for run in (whole, resumed):  # batches run shortest first, but the finished file is in data order
        assert file_ids(run.run_dir) == DATA_ORDER


def file_ids(run_dir):
    return [json.loads(line)["id"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


DATA_ORDER = [f"row{index}" for index in range(36)]


def test_a_crash_after_the_last_batch_resumes_to_the_same_run(dataset, tmp_path, classifier, monkeypatch):
    from hatelens.evaluation import evaluate as evaluate_module

    whole = evaluate(make_config(dataset, tmp_path / "whole"), classifier=classifier, progress=False)
    config = make_config(dataset, tmp_path / "crashed")
    finish_run = evaluate_module.finish_run

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "finish_run", crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, classifier=classifier, progress=False)
    (crashed,) = (tmp_path / "crashed").iterdir()
    assert file_ids(crashed) == DATA_ORDER and not (crashed / "metrics.json").exists()
    monkeypatch.setattr(evaluate_module, "finish_run", finish_run)
    resumed = evaluate(config, classifier=Interrupting(classifier, calls=0), progress=False)  # nothing to score
    assert resumed.run_dir == crashed and resumed.resumed_rows == 36
    assert {key: resumed.metrics[key] for key in ("f1", "fpr", "fnr", "roc_auc", "ci")} == {
        key: whole.metrics[key] for key in ("f1", "fpr", "fnr", "roc_auc", "ci")}
    assert file_ids(resumed.run_dir) == DATA_ORDER


def test_finished_run_is_not_overwritten(dataset, tmp_path, classifier):
    first = evaluate(make_config(dataset, tmp_path / "runs"), classifier=classifier, progress=False)
    second = evaluate(make_config(dataset, tmp_path / "runs"), classifier=classifier, progress=False)
    assert first.run_dir != second.run_dir


def test_per_group_thresholds_decide_predictions(dataset, tmp_path, classifier):
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"threshold": 0.0, "per_group": {"lgbtq": 1.0}}))
    result = evaluate(make_config(dataset, tmp_path / "runs", thresholds=str(thresholds)),
                      classifier=classifier, progress=False)
    for row in read_predictions(result.run_dir / "predictions.jsonl").values():
        assert row["prediction"] == ("normal" if row["group"] == "lgbtq" else "hate")


def test_max_samples_is_stratified_not_the_first_rows(dataset, tmp_path, classifier):
    result = evaluate(make_config(dataset, tmp_path / "runs", max_samples=12), classifier=classifier,
                      progress=False)
    rows = read_predictions(result.run_dir / "predictions.jsonl").values()
    assert len(rows) == 12
    assert {row["group"] for row in rows} == set(GROUPS)
    assert sorted(int(row["id"][3:]) for row in rows) != list(range(12))


def test_few_shot_examples_in_the_evaluated_data_are_refused(tmp_path, classifier):
    template = prompts.load_template("policy_persona")
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text(json.dumps({"text": template.few_shot[0].text, "label": "hate", "group": "lgbtq"}) + "\n")
    config = make_config(leaked, tmp_path / "runs")
    config.model.template = "policy_persona"
    with pytest.raises(DataError, match="few-shot"):
        evaluate(config, classifier=classifier, progress=False)


def test_rethreshold_equals_scoring_again_with_the_thresholds(dataset, tmp_path, classifier):
    from hatelens.evaluation.evaluate import rethreshold

    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"threshold": 0.55, "per_group": {"mexican": 0.45}}))
    plain = evaluate(make_config(dataset, tmp_path / "plain"), classifier=classifier, progress=False)
    rescored = evaluate(make_config(dataset, tmp_path / "rescored", thresholds=str(thresholds)),
                        classifier=classifier, progress=False)
    dataset.unlink()  # the scores and their order come from the run folder alone
    moved = rethreshold(plain.run_dir, str(thresholds), tmp_path / "moved")
    for key in ("f1", "fpr", "fnr", "accuracy", "roc_auc", "ci", "per_group"):
        assert moved.metrics[key] == rescored.metrics[key]
    assert file_ids(moved.run_dir) == DATA_ORDER
    assert moved.metrics["run"]["rethresholded_from"] == str(plain.run_dir)


def test_line_separators_inside_texts_survive_resume_rethreshold_and_compare(tmp_path):
    """JSON writes U+2028, U+2029 and U+0085 unescaped: predictions.jsonl is split on "\\n" alone."""
    from fixtures import LexiconClassifier
    from fixtures import write_dataset as write_lexicon_dataset

    from hatelens.evaluation.compare import compare
    from hatelens.evaluation.evaluate import rethreshold

    data = write_lexicon_dataset(tmp_path / "eval.jsonl", n=36)
    separators = ("\u2028", "\u2029", "\u0085")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for index, row in enumerate(rows):
        row["text"] += f" line{separators[index % 3]}break"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    config = EvalConfig(data=str(data), output_dir=str(tmp_path / "runs"), n_bootstrap=20,
                        model=ModelConfig(model="tiny", batch_size=2))
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, classifier=Interrupting(LexiconClassifier(), calls=3), progress=False)
    resumed = evaluate(config, classifier=LexiconClassifier(), progress=False)
    assert 0 < resumed.resumed_rows < 36 and resumed.metrics["n"] == 36
    written = read_predictions(resumed.run_dir / "predictions.jsonl")
    assert [row["text"] for row in written.values()] == [row["text"] for row in rows]

    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"threshold": 0.6}))
    moved = rethreshold(resumed.run_dir, str(thresholds), tmp_path / "moved")
    assert moved.metrics["n"] == 36
    comparison = compare(resumed.run_dir, moved.run_dir, output_dir=tmp_path / "compared", n_bootstrap=20)
    assert comparison.comparison["n"] == 36
