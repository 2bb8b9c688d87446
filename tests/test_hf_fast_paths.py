"""The hf backend's fast paths give the plain path's scores: prefix reuse (the shared prompt opening
is run once) and fused attention with GPT-OSS sinks."""

import pytest
import torch
from fixtures import eager_and_sink_logits
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.fast_paths import SINK_ATTENTION, use_sink_attention
from hatelens.backends.hf import HFClassifier

TEXTS = ["hello there", "a much longer post about gay people and mexican food and the middle east, told twice: "
         "a much longer post about gay people and mexican food and the middle east", "x", "the post"]


def _pair(folder, template="baseline", **kwargs):
    """(prefix-reusing, plain) classifiers over one model and tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = prompts.load_template(template)
    return (HFClassifier(model, tokenizer, template, **kwargs),
            HFClassifier(model, tokenizer, template, reuse_prefix=False, **kwargs))


def _scores(classifier, texts):
    return [output.score for output in classifier.classify(texts)]


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_prefix_reuse_gives_the_plain_scores(fixture, request):
    fast, plain = _pair(request.getfixturevalue(fixture), batch_size=3)
    reused = _scores(fast, TEXTS)
    # the shared opening was cached, and it is longer than the tiny GPT-OSS sliding window (16 tokens)
    assert fast._prefix is not None and len(fast._prefix[0]) > 16
    assert reused == pytest.approx(_scores(plain, TEXTS), abs=1e-5)


def test_a_single_text_reuses_the_opening_cached_by_an_earlier_call(tiny_gpt_oss_dir):
    fast, plain = _pair(tiny_gpt_oss_dir)
    fast.classify(TEXTS[:2])
    cached = fast._prefix
    assert fast.classify([TEXTS[3]])[0].score == pytest.approx(plain.classify([TEXTS[3]])[0].score, abs=1e-5)
    assert fast._prefix is cached


def test_texts_that_do_not_share_the_cached_opening_are_scored_plainly(tiny_llama_dir):
    fast, plain = _pair(tiny_llama_dir)
    fast.classify(TEXTS[:2])
    other = HFClassifier(fast.model, fast.tokenizer, prompts.load_template("policy_persona"))
    other._prefix = fast._prefix  # an opening from another template: no prompt starts with it
    assert other._cached_prefix_length([other.encode(TEXTS[0])]) == 0
    assert other.classify([TEXTS[0]])[0].score == pytest.approx(
        HFClassifier(fast.model, fast.tokenizer, prompts.load_template("policy_persona"),
                     reuse_prefix=False).classify([TEXTS[0]])[0].score, abs=1e-5)


def test_multi_token_label_words_with_prefix_reuse(tiny_llama_dir, tmp_path):
    source = prompts.PROMPTS_DIR / "baseline.yaml"
    custom = tmp_path / "long_words.yaml"
    custom.write_text(source.read_text().replace('hate: " hate"', 'hate: " hateful speech"')
                      .replace('normal: " normal"', 'normal: " fine post"'))
    fast, plain = _pair(tiny_llama_dir, str(custom), batch_size=2)
    assert len(dict(fast._answers)["hate"]) > 1
    assert _scores(fast, TEXTS) == pytest.approx(_scores(plain, TEXTS), abs=1e-5)


def test_prefix_reuse_is_off_where_the_head_is_not_plain(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    template = prompts.load_template("baseline")
    assert HFClassifier(model, tokenizer, template).reuse_prefix
    assert not HFClassifier(model, tokenizer, template, mode="generate").reuse_prefix
    model.config.model_type = "gemma2"  # soft-caps its logits after lm_head
    assert not HFClassifier(model, tokenizer, template).reuse_prefix
    model.config.model_type = "gemma3_text"  # plain head unless it asks for soft-capping
    assert HFClassifier(model, tokenizer, template).reuse_prefix
    model.config.final_logit_softcapping = 30.0
    assert not HFClassifier(model, tokenizer, template).reuse_prefix


def test_prefix_reuse_does_not_depend_on_batching(tiny_gpt_oss_dir):
    fast, _ = _pair(tiny_gpt_oss_dir, batch_size=4)
    batched = _scores(fast, TEXTS)
    fast.batch_size = 1
    with torch.no_grad():
        single = _scores(fast, TEXTS)
    assert batched == pytest.approx(single, abs=1e-5)


def test_fused_sink_attention_gives_eager_logits_and_gradients(tiny_gpt_oss_dir):
    eager = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    fused = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    use_sink_attention(fused)
    assert fused.config._attn_implementation == SINK_ATTENTION
    torch.manual_seed(0)
    input_ids = torch.randint(0, eager.config.vocab_size, (3, 40))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :7] = 0  # left padding, and a sequence longer than the 16-token sliding window
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, labels=input_ids)
    expected, got = eager(**inputs), fused(**inputs)
    real = attention_mask.bool()
    assert torch.allclose(got.logits[real], expected.logits[real], atol=1e-5)
    expected.loss.backward()
    got.loss.backward()
    for name in ("q_proj", "o_proj"):
        want = getattr(eager.model.layers[1].self_attn, name).weight.grad
        assert torch.allclose(getattr(fused.model.layers[1].self_attn, name).weight.grad, want, atol=1e-5)


def test_prefix_reuse_with_fused_sink_attention(tiny_gpt_oss_dir):
    fast, plain = _pair(tiny_gpt_oss_dir, batch_size=2)
    fast.model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).eval()
    use_sink_attention(fast.model)
    assert _scores(fast, TEXTS) == pytest.approx(_scores(plain, TEXTS), abs=1e-5)


def test_inference_sink_attention_keeps_queries_that_see_no_key_finite(tiny_gpt_oss_dir):
    """No gradients: the sink's share is taken from the kernel's log-sum-exp. 30 left pads, past the 16-token
    sliding window: pad queries there see no real key at all, and the real tokens still get eager's logits."""
    expected, got, real = eager_and_sink_logits(tiny_gpt_oss_dir)
    assert torch.isfinite(got).all()
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_fused_sink_attention_builds_each_mask_once_a_forward_pass_and_frees_it(tiny_gpt_oss_dir, monkeypatch):
    from hatelens.backends import fast_paths

    eager = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).eval()
    fused = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).eval()
    use_sink_attention(fused)
    built = []
    original = fast_paths._folded_mask
    monkeypatch.setattr(fast_paths, "_folded_mask", lambda mask, *args: (
        built.append(len(fast_paths._SINK_MASKS)), original(mask, *args))[1])
    torch.manual_seed(1)
    for width in (40, 23):  # two forward passes, other masks: nothing of the first may serve the second
        input_ids = torch.randint(0, eager.config.vocab_size, (2, width))
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, :5] = 0
        with torch.no_grad():
            expected = eager(input_ids=input_ids, attention_mask=attention_mask).logits
            got = fused(input_ids=input_ids, attention_mask=attention_mask).logits
        assert torch.allclose(got[attention_mask.bool()], expected[attention_mask.bool()], atol=1e-5)
        assert fast_paths._SINK_MASKS == {}  # freed with the forward pass's masks
    # per forward pass, one call a layer: the sliding layer built its mask (none cached before it), the full
    # layer one more
    assert built == [0, 1, 0, 1]


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_experts_that_skip_pads_give_the_same_scores(tiny_gpt_oss_dir, reuse_prefix):
    """pack_moe_tokens: the router and experts see only the real tokens of a padded batch (right padding after
    the cached opening, left padding without it), and every score stays what the unpacked model gives."""
    from hatelens.backends import fast_paths

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt_oss_dir)
    template = prompts.load_template("baseline")
    expected = _scores(HFClassifier(model, tokenizer, template, batch_size=4, reuse_prefix=reuse_prefix), TEXTS)
    seen = []
    hook = model.model.layers[0].mlp.experts.register_forward_hook(lambda _, inputs, __: seen.append(inputs[0].shape[0]))
    try:
        assert fast_paths.pack_moe_tokens(model)
        packed = HFClassifier(model, tokenizer, template, batch_size=4, reuse_prefix=reuse_prefix)
        assert _scores(packed, TEXTS) == pytest.approx(expected, abs=1e-5)
    finally:
        hook.remove()
        fast_paths.unpack_moe_tokens(model)
    assert not fast_paths.packs_moe_tokens(model)
    ids = packed.encode_many(TEXTS)
    skipped = len(packed._prefix[0]) if reuse_prefix else 0
    real = sum(len(row) - skipped for row in ids)
    # the batch (4 rows x the longest) holds pads; the experts computed the real tokens only
    assert seen[-1] == real < len(ids) * max(len(row) - skipped for row in ids)


def test_a_warm_up_caches_the_opening_and_changes_no_score(tiny_gpt_oss_dir):
    """HFClassifier.warm_up (what `create` runs on a GPU): the template's shared opening is cached by it and
    reused by the first real call, timing starts afresh, and the scores are those of a classifier never warmed."""
    fast, plain = _pair(tiny_gpt_oss_dir, batch_size=3)
    assert fast.warm_up() > 0
    cached = fast._prefix
    assert cached is not None and fast.timing["warmup_s"] > 0 and fast.timing["first_batch_s"] is None
    assert _scores(fast, TEXTS) == pytest.approx(_scores(plain, TEXTS), abs=1e-5)
    assert fast._prefix is cached  # the real texts start with the opening the warm-up cached
    assert fast.timing["later_rows"] + fast.timing["first_batch_rows"] == len(TEXTS)
