"""The hf backend on tiny random Llama and GPT-OSS models: score and generate modes."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
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
    assert len(dict(classifier._answers)["hate"]) > 1
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


def test_batch_end_bounds_rows_and_padded_tokens():
    from hatelens.backends.batch_plan import batch_end

    widths = [2, 3, 3, 5, 9, 20]
    assert batch_end(widths, 0, max_rows=4) == 4  # rows only: the old behaviour
    assert batch_end(widths, 0, max_rows=10, max_tokens=9) == 3  # 3 rows x 3 tokens fit, 4 x 5 do not
    assert batch_end(widths, 3, max_rows=10, max_tokens=9) == 4  # 2 x 9 > 9: one row
    assert batch_end(widths, 5, max_rows=10, max_tokens=9) == 6  # over the budget alone: still one row


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
@pytest.mark.parametrize("cost_share", [None, 1 / 16])  # filled in turn (the CPU's default), planned (a GPU's)
def test_token_budget_batches_give_the_row_batches_scores(fixture, cost_share, request, monkeypatch):
    folder = request.getfixturevalue(fixture)
    texts = [f"post number {index} " + "word " * (index % 7) for index in range(12)]
    by_rows = _classifier(folder, batch_size=4).classify(texts)
    classifier = _classifier(folder, batch_size=64, max_batch_tokens=40)
    assert classifier.batch_cost_share is None  # on a CPU
    classifier.batch_cost_share = cost_share
    sizes = []
    run_batch = classifier._run_batch
    monkeypatch.setattr(classifier, "_run_batch", lambda ids: sizes.append((len(ids), max(map(len, ids)))) or
                        run_batch(ids))
    by_tokens = classifier.classify(texts)
    assert [a.score for a in by_tokens] == pytest.approx([b.score for b in by_rows], abs=1e-5)
    assert sum(rows for rows, _ in sizes) == len(texts) and len(set(rows for rows, _ in sizes)) > 1
    skipped = classifier._prefix and len(classifier._prefix[0]) or 0  # tokens computed once, not per batch
    assert all(rows == 1 or rows * (width - skipped) <= 40 for rows, width in sizes)
    timing = classifier.timing  # the first batch (warm-up, compilation) apart from the others
    assert timing["first_batch_rows"] + timing["later_rows"] == len(texts) and timing["later_batches"] == len(sizes) - 1


def test_out_of_memory_halves_rows_and_token_budget(tiny_llama_dir, monkeypatch):
    classifier = _classifier(tiny_llama_dir, batch_size=8, max_batch_tokens=10_000, reuse_prefix=False)
    seen = []

    def run_batch(prompt_ids):
        seen.append(len(prompt_ids))
        if len(prompt_ids) > 1:
            raise torch.OutOfMemoryError("simulated")
        return [None]

    monkeypatch.setattr(classifier, "_run_batch", run_batch)
    classifier.classify(TEXTS)
    assert seen[:3] == [3, 2, 1]
    assert classifier.max_batch_tokens == 10_000  # the halving lasts for this call only


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_adapter_is_merged_in_memory_for_a_bf16_base_and_kept_for_fp32(tiny_gpt_oss_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from hatelens.backends.hf import load_for_inference

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    torch.manual_seed(1)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    template = prompts.load_template("baseline")
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = ModelConfig(model=str(tiny_gpt_oss_dir), adapter=str(tmp_path / "adapter"), dtype=dtype, device="cpu")
        loaded, tokenizer, version = load_for_inference(config)
        assert isinstance(loaded, PeftModel) == (dtype == "float32")
        assert "+adapter:" in version
        classifier = HFClassifier(loaded, tokenizer, template, batch_size=4)
        assert classifier.reuse_prefix  # the merged model keeps prefix reuse
        results[dtype] = [output.score for output in classifier.classify(TEXTS)]
    base = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    base_scores = [o.score for o in HFClassifier(base, tokenizer, template).classify(TEXTS)]
    assert results["bfloat16"] == pytest.approx(results["float32"], abs=0.03)  # bf16 rounding only
    assert max(abs(a - b) for a, b in zip(results["float32"], base_scores)) > 1e-3  # the adapter does something


def test_batch_cuts_with_a_token_budget_trade_pads_against_batches():
    from hatelens.backends.batch_plan import batch_ends

    widths = [2, 2, 2, 8, 8, 8]
    assert batch_ends(widths, 0, max_rows=4) == [4, 6]  # rows only: filled in turn
    assert batch_ends(widths, 0, max_rows=10, max_tokens=48, cost_share=None) == [6]  # 6 x 8 = 48 fits: one batch
    assert batch_ends(widths, 0, max_rows=10, max_tokens=48) == [3, 6]  # 3 x 2 + 3 x 8 + 2 x 3 < 48 + 3
    assert batch_ends(widths, 0, max_rows=10, max_tokens=48, cost_share=0.5) == [6]  # 30 + 2 x 24 > 48 + 24
    assert batch_ends(widths, 4, max_rows=10, max_tokens=48) == [6]
    assert batch_ends([1, 5, 9], 0, max_rows=10, max_tokens=4) == [1, 2, 3]  # a row over the budget: alone


@given(st.lists(st.integers(1, 60), min_size=1, max_size=80).map(sorted), st.integers(1, 12),
       st.integers(1, 200))
def test_planned_batches_cover_every_row_within_limits_and_pad_no_more_than_filling(widths, max_rows, max_tokens):
    from hatelens.backends.batch_plan import BATCH_COST_SHARE, batch_ends

    def cost(ends):
        starts = [0, *ends[:-1]]
        return sum((end - start) * widths[end - 1] for start, end in zip(starts, ends)) + \
            len(ends) * BATCH_COST_SHARE * max_tokens

    planned = batch_ends(widths, 0, max_rows=max_rows, max_tokens=max_tokens)
    assert planned[-1] == len(widths) and planned == sorted(set(planned))
    for start, end in zip([0, *planned[:-1]], planned):
        assert end - start <= max_rows and ((end - start) * widths[end - 1] <= max_tokens or end - start == 1)
    assert cost(planned) <= cost(batch_ends(widths, 0, max_rows=max_rows, max_tokens=max_tokens,
                                            cost_share=None)) + 1e-9
