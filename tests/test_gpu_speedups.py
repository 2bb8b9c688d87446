"""gpu_speedups on a CPU: nothing is switched on; the compiled gate itself computes the eager gate."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hatelens.backends.fast_paths import compile_expert_gate, restore_expert_gate, use_gpu_speedups


def test_nothing_is_switched_on_off_cuda(tiny_gpt_oss_dir, tiny_llama_dir):
    for folder in (tiny_gpt_oss_dir, tiny_llama_dir):
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert use_gpu_speedups(model, inference=True) == []
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
