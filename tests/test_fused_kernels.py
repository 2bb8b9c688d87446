"""gpt-oss's Triton kernels (backends/fused_kernels.py) compute what transformers' code computes.

Without a CUDA device the kernels run on the CPU through Triton's interpreter (conftest.py sets TRITON_INTERPRET=1):
the very kernels the GPU compiles. On the GPU machine the `gpu` test below and benchmarks/gpu_gpt_oss.py's
float32 check compare them again."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hatelens.backends import fused_kernels

pytest.importorskip("triton")  # the `test` extra installs it
needs_kernels = pytest.mark.skipif(not torch.cuda.is_available() and fused_kernels.os.environ.get("TRITON_INTERPRET")
                                   != "1", reason="needs CUDA or Triton's interpreter")


def _reference_gate(gate_up, bias, experts, alpha, limit):
    shifted = gate_up.float() + bias.float()[experts]
    gate, up = shifted[:, ::2].clamp(max=limit), shifted[:, 1::2].clamp(min=-limit, max=limit)
    return (up + 1) * (gate * torch.sigmoid(gate * alpha))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [24, fused_kernels.BLOCK + 76])  # one program a row; a second, partly masked
def test_bias_gate_is_the_clamped_swiglu_of_the_rows_plus_their_experts_bias(dtype, width):
    generator = torch.Generator().manual_seed(0)
    gate_up = (torch.randn(7, 2 * width, generator=generator) * 4).to(dtype)  # past the clamp limit too
    bias = torch.randn(3, 2 * width, generator=generator).to(dtype)
    experts = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    out = fused_kernels.bias_gate(gate_up, bias, experts, alpha=1.702, limit=7.0)
    assert out.dtype == dtype and out.shape == (7, width)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), _reference_gate(gate_up, bias, experts, 1.702, 7.0),
                               rtol=tolerance, atol=tolerance)


@needs_kernels
def test_combine_sums_each_tokens_weighted_rows_with_their_experts_bias():
    generator = torch.Generator().manual_seed(1)
    tokens, top_k, width = 5, 2, fused_kernels.BLOCK + 8
    down = torch.randn(tokens * top_k, width, generator=generator)
    bias = torch.randn(4, width, generator=generator)
    index = torch.tensor([[0, 3], [1, 2], [3, 1], [0, 2], [2, 0]])
    weights = torch.rand(tokens, top_k, generator=generator)
    position = torch.randperm(tokens * top_k, generator=generator)  # slot t*top_k + k -> its row of `down`
    expected = ((down[position] + bias[index.reshape(-1)]) * weights.reshape(-1, 1)).view(tokens, top_k, width).sum(1)
    torch.testing.assert_close(fused_kernels.combine(down, bias, index, weights, position), expected)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_is_gpt_oss_rms_norm(dtype):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRMSNorm

    norm = GptOssRMSNorm(40, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(40, generator=torch.Generator().manual_seed(2)))
    norm = norm.to(dtype)
    hidden = (torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    out = fused_kernels.fused_rms_norm(hidden, norm.weight, norm.variance_epsilon)
    assert out.dtype == dtype and out.shape == hidden.shape
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), norm(hidden).float(), rtol=tolerance, atol=tolerance)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("angle_rows", [1, 2])  # one position row for the batch (broadcast) or one a row
def test_rotary_is_gpt_oss_rotary_written_head_major(dtype, angle_rows):
    from transformers.models.gpt_oss.modeling_gpt_oss import _apply_rotary_emb

    generator = torch.Generator().manual_seed(4)
    batch, length, heads, head_dim = 2, 7, 3, 8  # 3 heads: the kernel's block of 4 is partly masked
    projected = torch.randn(batch, length, heads * head_dim, generator=generator).to(dtype)
    cos, sin = (torch.randn(angle_rows, length, head_dim // 2, generator=generator).to(dtype) for _ in range(2))
    out = fused_kernels.fused_rotary(projected, cos, sin, head_dim)
    assert out.shape == (batch, heads, length, head_dim) and out.is_contiguous() and out.dtype == dtype
    expected = _apply_rotary_emb(projected.float().view(batch, length, heads, head_dim).transpose(1, 2),
                                 cos.float().unsqueeze(1), sin.float().unsqueeze(1))
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, rtol=tolerance, atol=tolerance)


def _model(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in model.model.layers:  # the tiny model's biases and norm weights start at 0 and 1: vary them
            experts = layer.mlp.experts
            experts.gate_up_proj_bias.copy_(torch.randn(experts.gate_up_proj_bias.shape, generator=generator))
            experts.down_proj_bias.copy_(torch.randn(experts.down_proj_bias.shape, generator=generator))
            layer.input_layernorm.weight.copy_(torch.rand(layer.input_layernorm.weight.shape, generator=generator) + 0.5)
    return model


@needs_kernels
def test_a_model_with_the_kernels_gives_transformers_logits(tiny_gpt_oss_dir, monkeypatch):
    model = _model(tiny_gpt_oss_dir)
    ids = torch.randint(3, 200, (3, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert fused_kernels.use_fused_kernels(model) == ["fused experts", "fused RMSNorm", "fused rotary"]
    calls = {"bias_gate": 0, "fused_rms_norm": 0, "fused_rotary": 0}
    for name in calls:
        original = getattr(fused_kernels, name)
        monkeypatch.setattr(fused_kernels, name, lambda *args, _name=name, _original=original, **kwargs: (
            calls.__setitem__(_name, calls[_name] + 1), _original(*args, **kwargs))[1])
    with torch.no_grad():
        fused = model(input_ids=ids).logits
    layers = model.config.num_hidden_layers
    # every MoE layer, norm and attention (query and key) ran them
    assert calls == {"bias_gate": layers, "fused_rms_norm": 2 * layers + 1, "fused_rotary": 2 * layers}
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    fused_kernels.unfuse(model)
    assert model.config._experts_implementation == "grouped_mm"
    assert all("forward" not in module.__dict__ for module in model.modules())


@needs_kernels
def test_a_classifier_with_every_inference_speed_up_gives_the_plain_scores(tiny_gpt_oss_dir):
    """The kernels with what runs around them on a GPU: the cached prompt opening (the key goes through the cache),
    the fused sink attention and the experts skipping pads; batches of uneven lengths."""
    from transformers import AutoTokenizer

    from hatelens.backends import fast_paths, prompts
    from hatelens.backends.hf import HFClassifier

    model, tokenizer = _model(tiny_gpt_oss_dir), AutoTokenizer.from_pretrained(tiny_gpt_oss_dir)
    with torch.no_grad():  # sharp attention: the tiny model's small weights attend almost evenly, whatever the rotation
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40)
            layer.self_attn.k_proj.weight.mul_(40)
    template = prompts.load_template("compact")
    texts = [f"post {index}" + " and more words" * (index % 3) for index in range(5)]
    plain = HFClassifier(model, tokenizer, template, batch_size=3, reuse_prefix=False)
    prompt_ids = plain.encode_many(texts)
    with torch.no_grad():
        expected = plain._end_log_probs(prompt_ids, 1)  # every word's log-probability: the scores barely move
    fused_kernels.use_fused_kernels(model)
    fast_paths.use_sink_attention(model)
    fast_paths.pack_moe_tokens(model)
    fast = HFClassifier(model, tokenizer, template, batch_size=3)
    fast.classify(texts[:2])  # caches the opening
    assert fast._cached_prefix_length(prompt_ids) and fast._packs_moe
    with torch.no_grad():
        torch.testing.assert_close(fast._end_log_probs(prompt_ids, 1), expected, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_with_gradients_the_model_runs_transformers_code(tiny_gpt_oss_dir, monkeypatch):
    model = _model(tiny_gpt_oss_dir)
    assert fused_kernels.use_fused_kernels(model)
    for name in ("bias_gate", "fused_rms_norm", "fused_rotary"):
        monkeypatch.setattr(fused_kernels, name, lambda *args, **kwargs: pytest.fail("a kernel without backward ran"))
    ids = torch.randint(3, 200, (2, 9), generator=torch.Generator().manual_seed(4))
    model(input_ids=ids).logits.sum().backward()
    assert model.model.layers[0].mlp.experts.gate_up_proj.grad is not None


def test_the_kernels_apply_to_gpt_oss_only_and_can_be_turned_off(tiny_gpt_oss_dir, tiny_llama_dir, monkeypatch):
    assert fused_kernels.use_fused_kernels(AutoModelForCausalLM.from_pretrained(tiny_llama_dir)) == []
    monkeypatch.setenv("HATELENS_TRITON_KERNELS", "0")
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    assert fused_kernels.use_fused_kernels(model) == []
    assert model.config._experts_implementation == "grouped_mm"


def test_kernels_that_fail_to_compile_leave_transformers_code(tiny_gpt_oss_dir, monkeypatch, caplog):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    fused_kernels.kernels_compile.cache_clear()
    monkeypatch.setattr(fused_kernels, "combine", lambda *args, **kwargs: (_ for _ in ()).throw(
        RuntimeError("ptxas fatal: no such file")))
    try:
        assert fused_kernels.use_fused_kernels(model) == []
    finally:
        fused_kernels.kernels_compile.cache_clear()
    assert model.config._experts_implementation == "grouped_mm"
    assert "ptxas fatal" in caplog.text


def test_compiling_starts_in_the_background_only_for_gpt_oss_on_cuda(tiny_gpt_oss_dir, tiny_llama_dir):
    assert fused_kernels.compile_in_background(str(tiny_gpt_oss_dir), "cpu", torch.float32) is None
    assert fused_kernels.compile_in_background(str(tiny_llama_dir), "cuda", torch.bfloat16) is None
    assert fused_kernels.compile_in_background("nobody/not-in-the-cache", "cuda", torch.bfloat16) is None
    if torch.cuda.is_available():
        thread = fused_kernels.compile_in_background(str(tiny_gpt_oss_dir), "cuda", torch.bfloat16)
        thread.join()
        config = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).config
        assert fused_kernels.kernels_compile("cuda:0", torch.bfloat16, *fused_kernels._dimensions(config))


@pytest.mark.gpu
def test_on_cuda_the_compiled_kernels_give_transformers_logits(tiny_gpt_oss_dir):
    """float32, where rounding cannot flip an expert choice; bf16 scores: tests/test_gpu.py."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = _model(tiny_gpt_oss_dir).to("cuda")
    ids = torch.randint(3, 200, (4, 40), generator=torch.Generator().manual_seed(5)).to("cuda")
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert fused_kernels.use_fused_kernels(model) == ["fused experts", "fused RMSNorm", "fused rotary"]
        fused = model(input_ids=ids).logits
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
