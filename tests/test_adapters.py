"""An adapter's recorded template and base model are the defaults; another one is an error unless forced."""

import json

import pytest
import torch
from fixtures import write_dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from hatelens.backends import adapters, prompts
from hatelens.config import EvalConfig, ModelConfig
from hatelens.errors import ConfigError, ModelError
from hatelens.evaluation.evaluate import evaluate

# PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]


@pytest.fixture(scope="module")
def adapter(tiny_llama_dir, tmp_path_factory):
    """A LoRA adapter on the tiny Llama, recorded as trained with the compact template."""
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(folder)
    (folder / "hatelens_training.json").write_text(json.dumps({
        "base_model": str(tiny_llama_dir), "template": "compact",
        "prompt_sha256": prompts.load_template("compact").hash}))
    return folder


def test_the_adapter_s_template_and_base_are_the_defaults(adapter, tiny_llama_dir):
    resolved, source = adapters.resolve(ModelConfig(adapter=str(adapter)))
    assert (resolved.model, resolved.template) == (str(tiny_llama_dir), "compact")
    assert source == f"adapter ({adapter / 'hatelens_training.json'})"
    resolved, _ = adapters.resolve(ModelConfig(model=str(adapter)))
    assert (resolved.model, resolved.adapter, resolved.template) == (str(adapter), None, "compact")
    assert adapters.resolve(resolved)[0] == resolved  # idempotent


def test_without_an_adapter_the_defaults_are_unchanged():
    resolved, source = adapters.resolve(ModelConfig())
    assert (resolved.model, resolved.template, source) == ("smollm2-135m", "baseline", "default")
    resolved, source = adapters.resolve(ModelConfig(model="x", template="compact"))
    assert (resolved.model, resolved.template, source) == ("x", "compact", "given")


def test_another_template_is_an_error_unless_forced(adapter):
    with pytest.raises(ConfigError, match=f"^adapter {adapter} was trained with template compact, not baseline; "
                                          "drop --template to use compact, or add --force-template"):
        adapters.resolve(ModelConfig(model=str(adapter), template="baseline"))
    resolved, source = adapters.resolve(ModelConfig(model=str(adapter), template="baseline", force_template=True))
    assert resolved.template == "baseline" and source == "given, forced (the adapter was trained with compact)"
    # the recorded template under another spelling (its file) is the same template
    shipped = str(prompts.PROMPTS_DIR / "compact.yaml")
    assert adapters.resolve(ModelConfig(model=str(adapter), template=shipped))[0].template == shipped


def test_an_adapter_for_another_base_model_is_an_error(adapter, tiny_llama_dir, tiny_gpt_oss_dir):
    with pytest.raises(ModelError, match=f"^adapter {adapter} was trained on base model {tiny_llama_dir}, "
                                         f"not {tiny_gpt_oss_dir}; pass --model {tiny_llama_dir}"):
        adapters.resolve(ModelConfig(model=str(tiny_gpt_oss_dir), adapter=str(adapter)))
    assert adapters.resolve(ModelConfig(model=str(tiny_llama_dir), adapter=str(adapter)))[0].model == str(
        tiny_llama_dir)


def test_evaluate_an_adapter_with_its_own_template_and_says_so(adapter, tmp_path):
    data = write_dataset(tmp_path / "d.jsonl", n=6)
    config = EvalConfig(data=str(data), output_dir=str(tmp_path / "runs"), n_bootstrap=10,
                        model=ModelConfig(model=str(adapter), batch_size=4))
    result = evaluate(config, progress=False)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["prompt_template"] == "compact" and manifest["prompt_template_file"] == "compact"
    assert manifest["prompt_template_source"] == f"adapter ({adapter / 'hatelens_training.json'})"
    assert result.metrics["run"]["template"] == "compact"
