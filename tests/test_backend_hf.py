"""The hf backend on tiny random Llama and GPT-OSS models: score and generate modes."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier, create
from hatelens.config import ModelConfig
from hatelens.errors import ModelError

TEXTS = ["hello there", "a much longer post about gay people and mexican food and the middle east", "x"]


def _classifier(folder, template="baseline", **kwargs):
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFClassifier(model, tokenizer, prompts.load_template(template), **kwargs)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_score_mode_is_a_normalised_probability_independent_of_batching(fixture, request):
    folder = request.getfixturevalue(fixture)
    batched = _classifier(folder, batch_size=3).classify(TEXTS)
    single = _classifier(folder, batch_size=1).classify(TEXTS)
    for a, b in zip(batched, single):
        assert 0.0 < a.score < 1.0
        assert a.answer is None
        # left padding with correct position ids: a text's score does not depend on its neighbours
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_score_matches_label_word_log_probs_computed_by_hand(tiny_llama_dir):
    classifier = _classifier(tiny_llama_dir)
    tokenizer = classifier.tokenizer
    prompt = prompts.render_prompt(classifier.template, TEXTS[0], tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids

    def log_prob(word):
        ids = prompt_ids + tokenizer(word, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = classifier.model(torch.tensor([ids])).logits[0]
        log_probs = torch.log_softmax(logits, -1)
        return sum(log_probs[position - 1, ids[position]].item() for position in range(len(prompt_ids), len(ids)))

    hate, normal = log_prob(" hate"), log_prob(" normal")
    expected = math.exp(hate) / (math.exp(hate) + math.exp(normal))
    assert classifier.classify([TEXTS[0]])[0].score == pytest.approx(expected, rel=1e-4)


def test_multi_token_label_words_sum_every_token(tiny_llama_dir, tmp_path):
    source = prompts.PROMPTS_DIR / "baseline.yaml"
    custom = tmp_path / "long_words.yaml"
    custom.write_text(source.read_text().replace('hate: " hate"', 'hate: " hateful speech"')
                      .replace('normal: " normal"', 'normal: " fine post"'))
    classifier = _classifier(tiny_llama_dir, template=str(custom), batch_size=2)
    assert len(classifier._continuations["hate"]) > 1
    batched = classifier.classify(TEXTS)
    classifier.batch_size = 1
    single = classifier.classify(TEXTS)
    assert [o.score for o in batched] == pytest.approx([o.score for o in single], abs=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_generate_mode_returns_raw_text_and_never_guesses(fixture, request):
    folder = request.getfixturevalue(fixture)
    outputs = _classifier(folder, mode="generate", max_new_tokens=4, batch_size=2).classify(TEXTS)
    assert len(outputs) == 3
    for output in outputs:
        assert output.score is None
        assert isinstance(output.raw, str)
        # random weights write noise: the parser must call it invalid, not pick a label
        assert output.answer is None


def test_harmony_prompt_opens_the_final_channel(tiny_gpt_oss_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt_oss_dir)
    template = prompts.load_template("baseline")
    prompt = prompts.render_prompt(template, "some post", tokenizer)
    assert prompt.endswith("<|start|>assistant<|channel|>final<|message|>Answer:")
    assert not prompts.render_prompt(template, "some post", tokenizer, prefill_answer=False).endswith("Answer:")


def test_out_of_memory_halves_the_batch_then_stops_at_one(tiny_llama_dir, monkeypatch):
    classifier = _classifier(tiny_llama_dir, batch_size=4)
    seen = []

    def run_batch(prompt_ids):
        seen.append(len(prompt_ids))
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(classifier, "_run_batch", run_batch)
    with pytest.raises(ModelError, match="out of memory at batch size 1"):
        classifier.classify(TEXTS)
    assert seen == [3, 2, 1]


def test_missing_model_folder_is_a_clear_error(tmp_path, cache_dir):
    with pytest.raises(ModelError, match="cannot load model"):
        create(ModelConfig(model=str(tmp_path / "nowhere")))


def test_unreachable_hub_model_says_how_to_point_at_a_folder(cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache_dir / "hf"))
    with pytest.raises(ModelError, match=r"openai/gpt-oss-20b is not in the local Hugging Face cache.*--model DIR"):
        create(ModelConfig(model="gpt-oss-20b"))
