"""The reference backend: logistic regression on frozen MiniLM-L6 embeddings (the real encoder)."""

import json
import logging

import numpy as np
import pytest
import yaml

from hatelens.backends import create_backend
from hatelens.backends.reference import SentenceEncoder, encoder_folder
from hatelens.cli import main
from hatelens.config import EvalConfig, ModelConfig
from hatelens.errors import ModelError
from hatelens.evaluation.evaluate import evaluate

HOSTILE = ["{} are vermin and should be driven out", "I despise {}, they ruin everything",
           "{} are filthy animals", "get rid of all {} now"]
FRIENDLY = ["I had a lovely dinner with {} last night", "{} are wonderful neighbours",
            "my best friends are {}", "we celebrated the festival with {}"]
PEOPLE = {"lgbtq": ["gay people", "lesbians"], "mexican": ["Mexicans", "Mexican families"],
          "middle_east": ["Arabs", "Syrians"]}


def write(path, templates_by_label, people):
    rows = [{"text": template.format(person), "label": label, "group": group}
            for label, templates in templates_by_label.items() for template in templates
            for group, names in people.items() for person in names]
    path.write_text("".join(json.dumps({"id": f"{path.stem}{index}", **row}) + "\n" for index, row in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    train = write(folder / "train.jsonl", {"hate": HOSTILE[:3], "normal": FRIENDLY[:3]}, PEOPLE)
    held_out = write(folder / "held_out.jsonl", {"hate": HOSTILE[3:], "normal": FRIENDLY[3:]},
                     {"lgbtq": ["trans people"], "mexican": ["Mexican workers"], "middle_east": ["Iranians"]})
    return {"train": train, "held_out": held_out, "folder": folder}


def test_embeddings_are_unit_length_and_independent_of_batching():
    encoder = SentenceEncoder(encoder_folder(), batch_size=2)
    texts = ["short", "a somewhat longer sentence about the weather today", "another one"]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([text]) for text in texts])
    assert together.shape == (3, 384)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-5)  # padding never leaks into the mean


def test_reference_run_scores_unseen_sentences_like_any_backend(files, tmp_path):
    config = EvalConfig(data=str(files["held_out"]), output_dir=str(tmp_path / "runs"), n_bootstrap=20,
                        model=ModelConfig(backend="reference", reference_train=str(files["train"])))
    result = evaluate(config, progress=False)
    assert result.run_dir.name.endswith("_reference")
    assert result.metrics["run"]["model_version"].startswith("reference:all-MiniLM-L6-v2+logistic-regression:train-")
    assert result.metrics["run"]["template"] is None
    assert result.metrics["roc_auc"] == 1.0  # hostile and friendly sentences it never saw, told apart
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert all(0.0 < row["score"] < 1.0 for row in rows)


def test_texts_seen_in_training_are_reported(files, caplog):
    classifier = create_backend("reference", ModelConfig(backend="reference", reference_train=str(files["train"])))
    with caplog.at_level(logging.WARNING, logger="hatelens.backends.reference"):
        classifier.classify(["gay people are filthy animals", "a sentence it never saw"])
    assert "1 text(s) being scored are in the reference classifier's training data" in caplog.text
    assert classifier.seen_in_training == 1


def test_missing_training_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="reference training data .*nope.jsonl not found; pass model.reference_train"):
        create_backend("reference", ModelConfig(backend="reference", reference_train=str(tmp_path / "nope.jsonl")))


@pytest.mark.slow
def test_full_test_split_figures(tmp_path):
    """The figures quoted in the README: F1 0.698, ROC-AUC 0.805 on unified_test.json (train: unified_train)."""
    config = EvalConfig(data="data/unified/unified_test.json", output_dir=str(tmp_path), n_bootstrap=100,
                        model=ModelConfig(backend="reference"))
    metrics = evaluate(config, progress=False).metrics
    assert metrics["n"] == 1009
    assert metrics["f1"] == pytest.approx(0.698, abs=0.01)
    assert metrics["roc_auc"] == pytest.approx(0.805, abs=0.01)


# -- beside any evaluation: `hatelens evaluate --with-reference --reference-train FILE` ------------------------
def test_with_reference_scores_the_same_rows_into_a_reference_run(files, tiny_llama_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["evaluate", "--model", str(tiny_llama_dir), "--data", str(files["held_out"]), "--output-dir",
                 str(runs), "--max-samples", "5", "--threshold", "0.3", "--with-reference", "--reference-train",
                 str(files["train"]), "--quiet", "n_bootstrap=20"])
    printed = capsys.readouterr().out
    assert code == 0
    (llm_run,) = [run for run in runs.iterdir() if not run.name.endswith("_reference")]
    (reference_run,) = runs.glob("*_reference")
    llm_rows, reference_rows = (read_rows(run) for run in (llm_run, reference_run))
    assert [row["id"] for row in reference_rows] == [row["id"] for row in llm_rows] and len(llm_rows) == 5
    assert {row["threshold"] for row in llm_rows} == {0.3}
    assert {row["threshold"] for row in reference_rows} == {0.5}  # another model's threshold means nothing here
    config = yaml.safe_load((reference_run / "config.yaml").read_text())
    assert (config["model"]["backend"], config["model"]["reference_train"]) == ("reference", str(files["train"]))
    assert f"Reference (MiniLM-L6 + logistic regression, trained on {files['train']}):" in printed
    assert f"Wrote:  {reference_run}/  (compare or report with --reference {reference_run})" in printed


def test_reference_command_trains_from_the_named_file(files, tmp_path, capsys):
    code = main(["evaluate", "--backend", "reference", "--reference-train", str(files["train"]), "--data",
                 str(files["held_out"]), "--output-dir", str(tmp_path), "--quiet", "n_bootstrap=20"])
    assert code == 0
    (run,) = tmp_path.glob("*_reference")
    assert json.loads((run / "metrics.json").read_text())["roc_auc"] == 1.0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["reference_train"] == str(files["train"])


@pytest.mark.parametrize("extra, message", [
    (["--reference-train", "TRAIN"], "--reference-train is about the reference classifier: add --with-reference "
                                     "(or --backend reference)"),
    (["--reference-kind", "finetuned"], "--reference-kind is about the reference classifier: add --with-reference "
                                        "(or --backend reference)"),
    (["--with-reference", "--reference-train", "MISSING"], "reference training data MISSING not found; pass "
                                                           "--reference-train FILE"),
    (["--with-reference", "--backend", "reference", "--reference-train", "TRAIN"],
     "--with-reference beside --backend reference: this run already is the reference"),
])
def test_reference_flags_are_checked_before_any_scoring(files, tiny_llama_dir, tmp_path, capsys, extra, message):
    paths = {"TRAIN": str(files["train"]), "MISSING": str(tmp_path / "nope.jsonl")}
    extra = [paths.get(value, value) for value in extra]
    message = message.replace("MISSING", paths["MISSING"])
    code = main(["evaluate", "--model", str(tiny_llama_dir), "--data", str(files["held_out"]), "--output-dir",
                 str(tmp_path / "runs"), *extra])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "runs").exists()


def read_rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
