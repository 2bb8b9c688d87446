"""gpt-oss as published: experts in MXFP4 (FP4 E2M1 values, two a byte, and one power-of-two E8M0 scale a
block of 32), read on CPU through the gpt_oss_20b recipe's load path (dequantize_mxfp4: true), on a tiny
checkpoint written in that layout (fixtures.tiny_gpt_oss_mxfp4) whose expert weights MXFP4 holds exactly.
transformers dequantises them on CPU with torch alone (no `kernels`, no triton)."""

import json
import re
import shutil

import peft
import pytest
import torch
from fixtures import fp4_e2m1, mxfp4_pack, tiny_gpt_oss_mxfp4
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hatelens.backends import models
from hatelens.backends.fast_paths import describe_experts
from hatelens.config import TrainConfig, load_config
from hatelens.errors import ModelError
from hatelens.training.train import load_base_model

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

EXPERTS = "model.layers.1.mlp.experts"


@pytest.fixture(scope="module")
def mxfp4_checkpoint(tmp_path_factory):
    """(folder, the dense expert weights it stands for)"""
    return tiny_gpt_oss_mxfp4(tmp_path_factory.mktemp("tiny_gpt_oss_mxfp4"))


def load_for_training(folder, dtype=torch.float32, *overrides: str):
    """The base model as `hatelens train --config gpt_oss_20b` loads it, on CPU."""
    config = load_config(TrainConfig, "gpt_oss_20b", [f"model={folder}", "device=cpu", *overrides])
    source = models.resolve_model(str(folder))
    return load_base_model(config, source, models.load_tokenizer(source), dtype, "cpu"), config


def test_the_fixture_decodes_fp4_and_packs_nibbles_as_the_spec_says():
    # OCP MX spec, FP4 E2M1: codes 0-7 positive, 8-15 the same values negated
    table = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    assert fp4_e2m1(torch.arange(16, dtype=torch.uint8)).tolist() == table
    codes = torch.tensor([[[[3, 12] + [0] * 30]]], dtype=torch.uint8)  # one expert, one row, one block
    blocks, scales, dense = mxfp4_pack(codes, torch.tensor([[[125]]]))
    assert blocks[0, 0, 0, 0].item() == 0xC3  # the first value in the low nibble
    assert dense[0, 0, :2].tolist() == [1.5 / 4, -2.0 / 4] and scales.dtype == torch.uint8


def test_the_checkpoint_is_in_the_published_layout(mxfp4_checkpoint):
    """As openai/gpt-oss-20b: gate_up_proj_blocks (32, 5760, 90, 16) for hidden 2880, here (4, 128, 2, 16)."""
    folder, expected = mxfp4_checkpoint
    with safe_open(folder / "model.safetensors", "pt") as checkpoint:
        shapes = {name: (checkpoint.get_slice(name).get_shape(), checkpoint.get_slice(name).get_dtype())
                  for name in checkpoint.keys() if name.startswith(EXPERTS)}
    assert shapes == {f"{EXPERTS}.gate_up_proj_blocks": ([4, 128, 2, 16], "U8"),
                      f"{EXPERTS}.gate_up_proj_scales": ([4, 128, 2], "U8"),
                      f"{EXPERTS}.gate_up_proj_bias": ([4, 128], "BF16"),
                      f"{EXPERTS}.down_proj_blocks": ([4, 64, 2, 16], "U8"),
                      f"{EXPERTS}.down_proj_scales": ([4, 64, 2], "U8"),
                      f"{EXPERTS}.down_proj_bias": ([4, 64], "BF16")}
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["quant_method"] == "mxfp4"
    gate_up = expected[f"{EXPERTS}.gate_up_proj"]
    assert gate_up.shape == (4, 64, 128) and len(gate_up.unique()) > 20  # transformers' (experts, in, out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_load_dequantises_the_experts_exactly(mxfp4_checkpoint, dtype):
    folder, expected = mxfp4_checkpoint
    model, config = load_for_training(folder, dtype)
    assert config.dequantize_mxfp4
    assert sorted(expected) == sorted(name for name, _ in model.named_parameters()
                                      if name.endswith(("experts.gate_up_proj", "experts.down_proj")))
    for name, weights in expected.items():
        loaded = model.get_parameter(name)
        assert loaded.dtype == dtype and loaded.shape == weights.shape
        assert torch.equal(loaded, weights.to(dtype)), name  # exact: MXFP4 values are exact in bf16
    # dequantised means no longer quantised: what is saved from it (a merged model) is plain dense weights
    assert not getattr(model.config, "quantization_config", None) and not getattr(model, "is_quantized", False)


@pytest.mark.parametrize("dequantize", [True, False], ids=["training", "evaluation"])
def test_describe_experts_names_the_dense_experts(mxfp4_checkpoint, dequantize):
    """On CPU transformers dequantises whether asked or not (OpenAI's Triton kernels need `use_kernels`)."""
    folder, expected = mxfp4_checkpoint
    model, _ = load_for_training(folder, torch.float32, f"dequantize_mxfp4={str(dequantize).lower()}")
    assert describe_experts(model).split(" ")[0] == "GptOssExperts"
    assert torch.equal(model.get_parameter(f"{EXPERTS}.down_proj"), expected[f"{EXPERTS}.down_proj"])


def test_lora_trains_on_the_dequantised_model(mxfp4_checkpoint):
    """Forward and backward into LoRA on attention (the recipe's targets) and on the experts' weights."""
    folder, _ = mxfp4_checkpoint
    model, config = load_for_training(folder)
    lora = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=config.lora.target_modules,
                           target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
                           task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)
    tokenizer = models.load_tokenizer(models.resolve_model(str(folder)))
    batch = tokenizer(["vermin vermin out", "lovely tacos today"], return_tensors="pt", padding=True)
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    gradients = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert gradients and all(name.count("lora_") == 1 for name in gradients)  # the base stays frozen
    assert all(gradient is not None and torch.isfinite(gradient).all() for gradient in gradients.values())
    moved = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, gradient in gradients.items()
             if "lora_B" in name and gradient.abs().sum() > 0}
    assert moved >= {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert any("experts" in name and "lora_B" in name and gradient.abs().sum() > 0
               for name, gradient in gradients.items())


def corrupt(folder, target, change):
    """A copy of the checkpoint in `folder` with change(tensors) applied to its weights."""
    shutil.copytree(folder, target)
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


BLOCKS, SCALES = f"{EXPERTS}.gate_up_proj_blocks", f"{EXPERTS}.gate_up_proj_scales"
CORRUPTIONS = {  # name: (change to the tensors, what transformers says)
    "blocks half as wide": (lambda t: t.update({BLOCKS: t[BLOCKS][..., :8].clone()}), "ignore_mismatched_sizes"),
    "blocks of half the rows": (lambda t: t.update({BLOCKS: t[BLOCKS][:, :64].clone()}), "conversion"),
    "blocks not split in 16 bytes": (lambda t: t.update({BLOCKS: t[BLOCKS].flatten(2).clone()}), "conversion"),
    "a scale a row": (lambda t: t.update({SCALES: t[SCALES][..., :1].clone()}), "conversion"),
    "no scales": (lambda t: t.pop(SCALES), "conversion"),
    "no blocks": (lambda t: t.pop(BLOCKS), "conversion"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupted_mxfp4_checkpoint_fails_to_load(mxfp4_checkpoint, tmp_path, corruption):
    """transformers raises (its message: CORRUPTIONS); hatelens turns it into one line naming the folder."""
    change, message = CORRUPTIONS[corruption]
    folder = corrupt(mxfp4_checkpoint[0], tmp_path / "corrupted", change)
    with pytest.raises(ModelError, match=f"cannot load model from {re.escape(str(folder))}") as raised:
        load_for_training(folder)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value.__context__, RuntimeError) and message in str(raised.value.__context__)


def test_mxfp4_blocks_without_the_quantization_config_fail_to_load(mxfp4_checkpoint, tmp_path):
    """transformers alone would load it with random experts (the blocks UNEXPECTED, the weights MISSING)."""
    folder = corrupt(mxfp4_checkpoint[0], tmp_path / "no_config", lambda tensors: None)
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="MXFP4 tensors .* no quantization_config"):
        load_for_training(folder)


def test_out_of_memory_while_loading_is_not_called_a_damaged_checkpoint(mxfp4_checkpoint, monkeypatch):
    from transformers import AutoModelForCausalLM

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", out_of_memory)
    with pytest.raises(ModelError, match="out of memory loading model from .* onto cpu: free that device") as raised:
        load_for_training(mxfp4_checkpoint[0])
    assert "belong together" not in str(raised.value)
