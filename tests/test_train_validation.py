"""Validation during training and the adapter afterwards, both scored as `hatelens evaluate` scores: the
adapter evaluated like a baseline, eval_f1 and the validation loss read from the evaluator's own scoring."""

import dataclasses
import json

import peft
import pytest
import torch
from fixtures import tiny_train_config
from transformers import AutoTokenizer

from hatelens import data
from hatelens.backends import models, prompts
from hatelens.backends.text_scores import score_texts
from hatelens.config import EvalConfig, ModelConfig
from hatelens.data import Example
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import evaluate
from hatelens.training import records as sft_data
from hatelens.training.answer_loss import answer_loss
from hatelens.training.train import train, validation_scoring

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


def test_evaluate_reads_the_adapter_folder_or_base_plus_adapter(llama_run, tiny_llama_dir, tmp_path):
    result, _, work = llama_run
    data = str(work / "val.jsonl")

    def scores(**model):
        config = EvalConfig(data=data, output_dir=str(tmp_path / "eval"), n_bootstrap=10,
                            model=ModelConfig(template="compact", batch_size=4, **model))
        evaluation = evaluate(config, progress=False)
        rows = [json.loads(line) for line in (evaluation.run_dir / "predictions.jsonl").read_text().splitlines()]
        return evaluation, {row["id"]: row["score"] for row in rows}

    by_folder, folder_scores = scores(model=str(result.adapter_dir))
    by_pair, pair_scores = scores(model=str(tiny_llama_dir), adapter=str(result.adapter_dir))
    _, base_scores = scores(model=str(tiny_llama_dir))
    assert folder_scores == pytest.approx(pair_scores, abs=1e-6)
    assert folder_scores != pytest.approx(base_scores, abs=1e-3)  # the adapter changed the scores
    assert "+adapter:" in by_folder.metrics["run"]["model_version"]
    for name in ("config.yaml", "manifest.json", "predictions.jsonl", "metrics.json", "summary.txt"):
        assert (by_pair.run_dir / name).is_file()


def test_validation_f1_during_training_is_what_evaluate_reports_for_the_adapter(llama_run, tmp_path):
    """eval_f1 comes from the scorer the caller hands in (backends.text_scores.score_texts): the evaluator's own
    scores."""
    result, _, work = llama_run
    best = next(row for row in result.summary["evaluations"] if row["step"] == result.summary["best"]["step"])
    config = EvalConfig(data=str(work / "val.jsonl"), output_dir=str(tmp_path / "eval"), n_bootstrap=10,
                        model=ModelConfig(model=str(result.adapter_dir), template="compact", batch_size=4))
    metrics = evaluate(config, progress=False).metrics
    assert (best["eval_f1"], best["eval_roc_auc"]) == pytest.approx((metrics["f1"], metrics["roc_auc"]), abs=1e-6)


def test_validation_loss_read_from_the_scoring_pass_is_the_records_answer_loss(llama_run, tiny_llama_dir):
    """With one-token answers the trainer skips its record-by-record loss pass and reads the validation loss from
    the scoring pass (-log P(answer)): it must be the loss that pass computes, answer_loss over the records."""
    result, _, work = llama_run
    best = next(row for row in result.summary["evaluations"] if row["step"] == result.summary["best"]["step"])
    assert "eval_answer_token_accuracy" not in best  # the loss pass, which counts it, did not run
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = peft.PeftModel.from_pretrained(models.load_model(models.resolve_model(str(tiny_llama_dir))),
                                           str(result.adapter_dir)).eval()
    records = sft_data.build_dataset(data.load_examples(str(work / "val.jsonl")).examples,
                                     prompts.load_template("compact"), tokenizer, max_length_tokens=1024, where="val")
    with torch.no_grad():
        losses = [answer_loss(model, torch.tensor([row["input_ids"]]), torch.ones(1, len(row["input_ids"])),
                              torch.tensor([row["labels"]])).loss.item() for row in records]
    assert best["eval_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert result.summary["evaluations"][0]["eval_loss"] > best["eval_loss"]  # the untrained model's, higher


def test_a_several_token_answer_keeps_the_loss_pass(tiny_llama_dir):
    """A JSON answer is several tokens, and score mode reads only its opening: no loss from the scores."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    examples = [Example(id="a", text="a post", label="hate", group="lgbtq")]
    word = prompts.load_template("compact")
    scoring = validation_scoring(examples, word, score_texts, tokenizer, 1024)
    assert scoring.loss_from_scores and scoring.max_length_tokens == 1023  # the answer's token kept free
    json_answer = validation_scoring(examples, dataclasses.replace(word, answer_format="json"), score_texts,
                                     tokenizer, 1024)
    assert not json_answer.loss_from_scores and json_answer.max_length_tokens is None
    assert validation_scoring(examples, word, None, tokenizer, 1024) is None


def test_without_a_scorer_training_reports_no_f1_and_cannot_pick_by_it(tiny_llama_dir, tmp_path):
    with pytest.raises(ConfigError, match="best_metric f1 needs the validation split scored"):
        train(tiny_train_config(tiny_llama_dir, tmp_path, "best_metric=f1"), progress=False)
