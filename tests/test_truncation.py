"""max_length_tokens: an over-long post is cut (its start kept), the instructions and answer whole;
evaluate counts the cut rows overall and per group."""

import json
import time

import pytest
from fixtures import write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier
from hatelens.backends.truncation import cut_posts
from hatelens.config import EvalConfig, ModelConfig
from hatelens.data import Example
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import evaluate
from hatelens.training import records

LONG_TEXT = " ".join(f"word{index % 97}" for index in range(5000))  # 5,000 words
SHORT_TEXT = "a short post about tacos"
CAP = 200


def _classifier(folder, **kwargs) -> HFClassifier:
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFClassifier(model, tokenizer, prompts.load_template("baseline"), **kwargs)


def _head_and_tail(template, tokenizer, prefill_answer=True) -> tuple[str, str]:
    """The rendered prompt before and after the post."""
    head, tail = prompts.render_prompt(template, "\x00MARK\x00", tokenizer, prefill_answer=prefill_answer).split(
        "\x00MARK\x00")
    return head, tail


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_a_5000_word_post_is_cut_to_fit_and_flagged_and_a_short_one_is_not(tiny_llama_dir, mode):
    classifier = _classifier(tiny_llama_dir, mode=mode, max_length_tokens=CAP, max_new_tokens=2)
    started = time.perf_counter()
    long_output, short_output = classifier.classify([LONG_TEXT, SHORT_TEXT])
    assert time.perf_counter() - started < 30  # uncut, 5,000 words through the model would take far longer
    assert long_output.truncated and not short_output.truncated
    ids, cut = classifier.encode_fitted([LONG_TEXT, SHORT_TEXT])
    assert cut == [True, False]
    assert CAP - 5 <= len(ids[0]) <= CAP  # the budget is used, not just met
    head, tail = _head_and_tail(classifier.template, classifier.tokenizer, prefill_answer=mode == "score")
    rendered = classifier.tokenizer.decode(ids[0])
    assert rendered.startswith(head + "word0 word1 word2") and rendered.endswith(tail)  # instructions whole


def test_a_short_posts_score_is_unchanged_by_the_cap(tiny_llama_dir):
    uncapped = _classifier(tiny_llama_dir).classify([SHORT_TEXT, "another short one"])
    capped = _classifier(tiny_llama_dir, max_length_tokens=CAP).classify([SHORT_TEXT, LONG_TEXT, "another short one"])
    assert capped[0].score == pytest.approx(uncapped[0].score, abs=1e-6)
    assert capped[2].score == pytest.approx(uncapped[1].score, abs=1e-6)
    assert not capped[0].truncated and not uncapped[0].truncated


def test_a_template_longer_than_the_cap_is_a_config_error(tiny_llama_dir):
    classifier = _classifier(tiny_llama_dir, max_length_tokens=10)
    with pytest.raises(ConfigError, match=r"template baseline is \d+ tokens without any post, over the 10 "
                                          "max_length_tokens allows; raise max_length_tokens"):
        classifier.classify([LONG_TEXT])


def test_a_training_record_keeps_its_instructions_and_answer_when_the_post_is_cut(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    template = prompts.load_template("baseline")
    record = records.tokenize_example(Example("x", LONG_TEXT, "hate", "lgbtq", "t"), template, tokenizer,
                                      max_length_tokens=CAP)
    answer = tokenizer(template.answer("hate"), add_special_tokens=False).input_ids
    assert record["truncated"] and len(record["input_ids"]) <= CAP
    assert record["input_ids"][-len(answer):] == answer and record["labels"][-len(answer):] == answer
    head, tail = _head_and_tail(template, tokenizer)
    assert tokenizer.decode(record["input_ids"][:-len(answer)]).endswith(tail)
    short = records.tokenize_example(Example("y", SHORT_TEXT, "hate", "lgbtq", "t"), template, tokenizer,
                                     max_length_tokens=CAP)
    assert short == {**records.tokenize_example(Example("y", SHORT_TEXT, "hate", "lgbtq", "t"), template,
                                                tokenizer), "truncated": False}
    dataset = records.build_dataset([Example("x", LONG_TEXT, "hate", "lgbtq", "t")], template, tokenizer,
                                    max_length_tokens=CAP, where="t")
    assert dataset[0]["length"] <= CAP


def test_evaluate_counts_cut_posts_overall_and_per_group(tmp_path, tiny_llama_dir):
    rows = [{"id": "long", "text": LONG_TEXT, "label": "hate", "group": "lgbtq"},
            {"id": "short1", "text": SHORT_TEXT, "label": "normal", "group": "lgbtq"},
            {"id": "short2", "text": "another short one", "label": "hate", "group": "mexican"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = EvalConfig(data=str(data), output_dir=str(tmp_path / "runs"), n_bootstrap=10,
                        model=ModelConfig(model=str(tiny_llama_dir), max_length_tokens=CAP, batch_size=4))
    result = evaluate(config, progress=False)
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["truncated"] == {"overall": 1, "per_group": {"lgbtq": 1, "mexican": 0}}
    assert "Truncated:          1 post(s) cut to fit max_length_tokens (lgbtq 1)" in result.summary
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row.get("truncated", False) for row in predictions] == [True, False, False]

    short_data = write_jsonl(tmp_path / "s.jsonl", rows[1:])
    config.data, config.output_dir = str(short_data), str(tmp_path / "runs2")
    short = evaluate(config, progress=False)
    assert short.metrics["truncated"] == {"overall": 0, "per_group": {"lgbtq": 0, "mexican": 0}}
    assert "Truncated" not in short.summary


def test_the_servers_cap_keeps_a_posts_start_and_counts_its_tokens(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    posts, tokens, cut = cut_posts([LONG_TEXT, SHORT_TEXT], tokenizer, CAP)
    assert cut == [True, False] and posts[1] == SHORT_TEXT and LONG_TEXT.startswith(posts[0])
    assert tokens == [CAP, len(tokenizer(SHORT_TEXT, add_special_tokens=False).input_ids)]
    assert len(tokenizer(posts[0], add_special_tokens=False).input_ids) == CAP  # cut at a token boundary


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
@pytest.mark.parametrize("name", ["baseline", "compact_8shot", "policy_persona"])
@pytest.mark.parametrize("prefill", [True, False])
def test_prompts_rendered_once_a_template_are_the_prompts_rendered_one_by_one(fixture, name, prefill, request):
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    template = prompts.load_template(name)
    texts = [SHORT_TEXT, "  spaces around  ", "line\nbreak {text} {{ jinja }}", "", "emoji 🙂 and <|end|>"]
    one_by_one = [prompts.render_prompt(template, text, tokenizer, prefill_answer=prefill) for text in texts]
    assert prompts.render_prompts(template, texts, tokenizer, prefill_answer=prefill) == one_by_one
    assert prompts._SLOTS[tokenizer]  # the chat template ran for the probes, not once a text


def test_a_chat_template_that_changes_the_post_is_rendered_once_a_post(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>{% endfor %}"
    template = prompts.load_template("compact")
    texts = ["  padded post  ", "plain"]
    rendered = prompts.render_prompts(template, texts, tokenizer)
    assert rendered == [prompts.render_prompt(template, text, tokenizer) for text in texts]
    assert "padded post</s>" in rendered[0] and list(prompts._SLOTS[tokenizer].values()) == [None]
