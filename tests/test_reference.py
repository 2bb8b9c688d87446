"""The reference backend: logistic regression on frozen MiniLM-L6 embeddings (the real encoder)."""

import json
import logging

import numpy as np
import pytest

from hatelens.backends import create_backend
from hatelens.backends.reference import SentenceEncoder, encoder_folder
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
