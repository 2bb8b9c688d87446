"""gpu_speedups on a CPU: nothing is switched on; the compiled gate itself computes the eager gate."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hatelens.backends import fast_paths
from hatelens.backends.fast_paths import compile_expert_gate, restore_expert_gate, use_gpu_speedups


def test_nothing_is_switched_on_off_cuda(tiny_gpt_oss_dir, tiny_llama_dir):
    for folder in (tiny_gpt_oss_dir, tiny_llama_dir):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert use_gpu_speedups(model, inference=True) == {"applied": []}
        assert model.config._attn_implementation != "hatelens_fused_sinks"


def test_a_model_without_an_expert_gate_is_left_alone(tiny_llama_dir):
    assert compile_expert_gate(AutoModelForCausalLM.from_pretrained(tiny_llama_dir)) is False


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit
def test_the_compiled_gate_gives_the_eager_logits(tiny_gpt_oss_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir, dtype=torch.float32).eval()
    input_ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids).logits
        try:
            assert compile_expert_gate(model)
            got = model(input_ids).logits
        finally:
            restore_expert_gate(model)
    assert "_eager_gate" not in type(model.model.layers[0].mlp.experts).__dict__
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_pure_gate_is_the_model_gate(tiny_gpt_oss_dir):
    experts = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir).model.layers[0].mlp.experts
    gate_up = torch.randn(7, 2 * experts.intermediate_size, generator=torch.Generator().manual_seed(0)) * 10
    torch.testing.assert_close(fast_paths.gate(gate_up, experts.alpha, experts.limit), experts._apply_gate(gate_up))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit
def test_the_gate_compiles_once_for_every_batch_shape(tiny_gpt_oss_dir):
    """Batches of other rows and widths (and a training backward pass) reuse the one compilation."""
    import torch._dynamo

    torch._dynamo.reset()
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir, dtype=torch.float32)
    before = fast_paths.GATE_COMPILATIONS["count"]
    try:
        assert compile_expert_gate(model, backend="eager")
        assert fast_paths.warm_up_expert_gate(model, backward=True) > 0
        after_warm_up = fast_paths.GATE_COMPILATIONS["count"]
        for rows, width in ((2, 24), (5, 31), (3, 57), (8, 9)):
            input_ids = torch.randint(0, model.config.vocab_size, (rows, width))
            model(input_ids).logits.sum().backward()
    finally:
        restore_expert_gate(model)
    assert after_warm_up - before == 1
    assert fast_paths.GATE_COMPILATIONS["count"] == after_warm_up  # no recompilation per shape


def test_the_expert_implementation_is_named(tiny_gpt_oss_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir)
    assert fast_paths.describe_experts(model).startswith("GptOssExperts")


def _loss_grads_and_saved_bytes(model, input_ids):
    """The loss, the gradient of every trainable weight, and the bytes autograd kept for the backward pass."""
    saved = []

    def keep(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, sum(saved)


def test_the_recomputed_gate_keeps_less_for_the_same_gradients(tiny_gpt_oss_dir):
    """Training's default on CUDA, run here on a CPU: same loss and gradients, fewer saved bytes."""
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss_dir, dtype=torch.float32)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    eager_loss, eager_grads, eager_saved = _loss_grads_and_saved_bytes(model, input_ids)
    with torch.no_grad():
        eager_logits = model(input_ids).logits
    try:
        assert fast_paths.recompute_expert_gate(model)
        assert fast_paths.recompute_expert_gate(model)  # already patched: still on, not patched twice
        loss, grads, saved = _loss_grads_and_saved_bytes(model, input_ids)
        with torch.no_grad():  # inference takes the eager gate: nothing to recompute
            torch.testing.assert_close(model(input_ids).logits, eager_logits)
    finally:
        restore_expert_gate(model)
    assert "_recomputed" not in type(model.model.layers[0].mlp.experts).__dict__
    torch.testing.assert_close(loss, eager_loss)
    assert grads.keys() == eager_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], eager_grads[name], atol=1e-6, rtol=1e-5)
    experts = model.model.layers[0].mlp.experts
    routed = 3 * 40 * model.config.num_experts_per_tok * model.config.num_hidden_layers
    # the gate's intermediates: at least three (tokens x 4, intermediate) float32 tensors a layer fewer
    assert eager_saved - saved >= 3 * routed * experts.intermediate_size * 4


def test_cudnn_attention_is_left_out_unless_asked(monkeypatch):
    from torch.nn.attention import SDPBackend

    monkeypatch.delenv("HATELENS_CUDNN_ATTENTION", raising=False)
    assert SDPBackend.CUDNN_ATTENTION not in fast_paths.sink_backends()
    assert SDPBackend.EFFICIENT_ATTENTION in fast_paths.sink_backends()
    monkeypatch.setenv("HATELENS_CUDNN_ATTENTION", "1")
    assert fast_paths.sink_backends() is None  # PyTorch's own choice, cuDNN included
