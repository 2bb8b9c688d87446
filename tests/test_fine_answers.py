"""A template's fine answers (`fine_answers`): a third answer word that training gives the posts of one finer label
(HateXplain's offensive posts, labelled normal) and scoring counts toward its label."""

import json
import math

import peft
import pytest
import torch
from fixtures import separable_rows, serving, tiny_train_config, write_jsonl
from test_openai_backend import ChatServer, completion, ok, post_text
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens import data
from hatelens.backends import models, prompts
from hatelens.backends.hf import HFClassifier
from hatelens.backends.openai_compat import OpenAICompatClassifier
from hatelens.backends.parsing import parse_answer
from hatelens.backends.text_scores import score_texts
from hatelens.config import EvalConfig, ModelConfig
from hatelens.data import Example, augment
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import evaluate
from hatelens.training import records as sft_data
from hatelens.training.answer_loss import answer_loss
from hatelens.training.train import train, validation_scoring

pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]

TEMPLATE = prompts.load_template("compact_offensive")
WORDS = (" hate", " normal", " offensive")
OFFENSIVE = Example(id="o", text="gay people are absolute clowns", label="normal", group="lgbtq", source="hatexplain",
                    extra={"fine_label": "offensive"})


def _write_template(tmp_path, fine_answers: str, answer_format: str = "word"):
    path = tmp_path / "t.yaml"
    path.write_text(f'name: t\nuser: "Post: {{text}}"\nanswer_format: {answer_format}\n'
                    f'label_words: {{hate: " hate", normal: " normal"}}\nfine_answers: {fine_answers}\n')
    return str(path)


def test_a_post_of_the_finer_label_answers_the_fine_word_and_the_others_their_label():
    assert TEMPLATE.answer("normal", "offensive") == " offensive"
    assert TEMPLATE.answer("normal", "normal") == " normal"
    assert TEMPLATE.answer("hate", "hatespeech") == " hate"
    assert TEMPLATE.answer("hate") == " hate"
    assert TEMPLATE.scored_answers() == [("hate", " hate"), ("normal", " normal"), ("normal", " offensive")]
    assert prompts.load_template("compact").answer("normal", "offensive") == " normal"  # no fine answers: as before
    with pytest.raises(ConfigError, match="counts offensive as normal, but a post labelled hate has that finer label"):
        TEMPLATE.answer("hate", "offensive")


@pytest.mark.parametrize("spec, answer_format, message", [
    ('{offensive: " offensive"}', "word", "fine_answers maps a finer label to"),
    ("{offensive: {word: ' offensive', label: toxic}}", "word", "fine_answers maps a finer label to"),
    ("{offensive: {word: ' offensive', label: normal}}", "json", "fine_answers needs answer_format word"),
    ("{offensive: {word: ' Normal', label: normal}}", "word", "is already an answer word"),
    ("[offensive]", "word", "fine_answers maps a finer label to"),
])
def test_a_malformed_fine_answer_is_a_config_error(tmp_path, spec, answer_format, message):
    with pytest.raises(ConfigError, match=message):
        prompts.load_template(_write_template(tmp_path, spec, answer_format))


def test_the_fine_answers_are_part_of_the_template_hash(tmp_path):
    one = prompts.load_template(_write_template(tmp_path, "{offensive: {word: ' offensive', label: normal}}"))
    other = prompts.load_template(_write_template(tmp_path, "{offensive: {word: ' rude', label: normal}}"))
    assert one.hash != other.hash


def test_a_generated_fine_word_parses_as_its_label():
    assert parse_answer(" offensive", TEMPLATE.label_words, TEMPLATE.fine_words) == "normal"
    assert parse_answer("Offensive.", TEMPLATE.label_words, TEMPLATE.fine_words) == "normal"
    assert parse_answer(" offensive", TEMPLATE.label_words) is None  # a template without it: not an answer


def test_the_training_record_of_an_offensive_post_ends_in_the_fine_word(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    record = sft_data.tokenize_example(OFFENSIVE, TEMPLATE, tokenizer)
    word = tokenizer(" offensive", add_special_tokens=False).input_ids
    assert record["input_ids"][-len(word):] == word
    assert [label for label in record["labels"] if label != sft_data.IGNORE_INDEX] == word
    # a counterfactual copy keeps the finer label, so it learns the same word
    copies, _ = augment.augment([OFFENSIVE], counterfactual=True, neutral_per_group=0, balance_labels=False, seed=0)
    assert len(copies) > 1 and all(copy.extra["fine_label"] == "offensive" for copy in copies)


def word_log_probs(model, tokenizer, text: str, words) -> dict[str, float]:
    """log P(word | the template's prompt for text), every token of the word counted, by hand from the logits."""
    prompt = tokenizer(prompts.render_prompt(TEMPLATE, text, tokenizer), add_special_tokens=False).input_ids
    result = {}
    for word in words:
        ids = prompt + tokenizer(word, add_special_tokens=False).input_ids
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        result[word] = sum(log_probs[position - 1, ids[position]].item() for position in range(len(prompt), len(ids)))
    return result


def test_p_hate_counts_the_fine_word_as_not_hate(tiny_llama_dir):
    """P(hate) = P(hate's word) / (P(hate's) + P(normal's) + P(offensive's)), each word's tokens summed, as computed
    by hand from the model's logits; label_log_probs holds each word's log-probability."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    classifier = HFClassifier(model, tokenizer, TEMPLATE, batch_size=2)
    texts = ["a short post", "another post about gay people and their rights"]
    outputs = classifier.classify(texts)

    for text, output in zip(texts, outputs):
        hate, normal, offensive = word_log_probs(model, tokenizer, text, WORDS).values()
        assert output.score == pytest.approx(math.exp(hate) / (math.exp(hate) + math.exp(normal) + math.exp(offensive)),
                                             rel=1e-4)
        assert output.label_log_probs == pytest.approx((hate, normal, offensive), abs=1e-4)


def test_the_openai_backend_counts_the_fine_word_toward_normal():
    server = ChatServer(lambda body, attempt: ok(completion("offensive", {"Offensive": 0.3, "hate": 0.2,
                                                                          "normal": 0.1})))
    with serving(server.app) as url:
        output = OpenAICompatClassifier(f"{url}/v1", "m", TEMPLATE, backoff_s=0.01).classify(["x"])[0]
    assert output.score == pytest.approx(0.2 / 0.6)
    assert post_text(server.bodies[0]) == "x"


def test_a_several_token_fine_word_keeps_the_loss_pass_and_a_one_token_one_reads_it_from_the_scores(
        tiny_llama_dir, tmp_path):
    """The tiny vocabulary spells " offensive" in 7 tokens, of which score mode reads them all: the loss needs the
    record pass. " word" is one token: each row's loss is read from its answer's column of the scores."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rows = [OFFENSIVE, Example(id="h", text="a post", label="hate", group="lgbtq"),
            Example(id="n", text="a post", label="normal", group="lgbtq")]
    scoring = validation_scoring(rows, TEMPLATE, score_texts, tokenizer, 1024)
    assert not scoring.loss_from_scores and scoring.max_length_tokens is None
    one_token = prompts.load_template(_write_template(tmp_path, "{offensive: {word: ' word', label: normal}}"))
    scoring = validation_scoring(rows, one_token, score_texts, tokenizer, 1024)
    assert scoring.answer_columns == [2, 0, 1] and scoring.max_length_tokens == 1023


def test_training_through_a_fine_answer_is_scored_as_evaluate_scores_its_adapter(tiny_llama_dir, tmp_path):
    """Training on a split with offensive posts, their answer a one-token word: the validation loss read from the
    scoring pass is the records' answer loss (the fine word's for the offensive posts), and eval_f1 is what
    `hatelens evaluate` reports for the adapter, which scores through the template it was trained with (recorded
    beside it) without being told."""
    rows = separable_rows(12)
    for row in rows[::3]:  # a third of the posts: offensive, labelled normal
        row.update(text=f"stupid clown idiot {row['id']}", label="normal", label_fine="offensive")
    write_jsonl(tmp_path / "data.jsonl", rows)
    template = _write_template(tmp_path, "{offensive: {word: ' word', label: normal}}")
    config = tiny_train_config(tiny_llama_dir, tmp_path, f"template={template}",
                               f"train_file={tmp_path / 'data.jsonl'}", f"val_file={tmp_path / 'data.jsonl'}")
    result = train(config, score_texts=score_texts, progress=False)
    best = next(row for row in result.summary["evaluations"] if row["step"] == result.summary["best"]["step"])
    assert "eval_answer_token_accuracy" not in best  # no record-by-record loss pass
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = peft.PeftModel.from_pretrained(models.load_model(models.resolve_model(str(tiny_llama_dir))),
                                           str(result.adapter_dir)).eval()
    records = sft_data.build_dataset(data.load_examples(str(tmp_path / "data.jsonl")).examples,
                                     prompts.load_template(template), tokenizer, max_length_tokens=1024, where="val")
    assert sum(row["labels"][-1] == tokenizer(" word", add_special_tokens=False).input_ids[0] for row in records) == 4
    with torch.no_grad():
        losses = [answer_loss(model, torch.tensor([row["input_ids"]]), torch.ones(1, len(row["input_ids"])),
                              torch.tensor([row["labels"]])).loss.item() for row in records]
    assert best["eval_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert json.loads((result.adapter_dir / "hatelens_training.json").read_text())["template"] == template
    evaluation = evaluate(EvalConfig(data=str(tmp_path / "data.jsonl"), output_dir=str(tmp_path / "eval"),
                                     n_bootstrap=10, model=ModelConfig(model=str(result.adapter_dir), batch_size=4)),
                          progress=False)
    assert (best["eval_f1"], best["eval_roc_auc"]) == pytest.approx(
        (evaluation.metrics["f1"], evaluation.metrics["roc_auc"]), abs=1e-6)
