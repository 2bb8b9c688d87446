"""`hatelens merge`: the merged model scores exactly like base + adapter (tiny random Llama)."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier
from hatelens.cli import main
from hatelens.errors import ConfigError
from hatelens.training.merge import MERGE_INFO, merge_adapter

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

TEXTS = ["vermin out of our country", "lovely tacos today", "a longer post about the middle east and its music"]


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir, tmp_path_factory):
    """A LoRA adapter with non-zero weights (as if trained), naming the tiny model as its base."""
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, config).save_pretrained(folder)
    return folder


def scores(model, folder) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    classifier = HFClassifier(model, tokenizer, prompts.load_template("compact"), batch_size=2)
    return [output.score for output in classifier.classify(TEXTS)]


def test_merged_model_scores_like_base_plus_adapter(tiny_llama_dir, adapter_dir, tmp_path):
    output = merge_adapter(str(adapter_dir), str(tmp_path / "merged"))
    assert (output / "model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    assert not list(output.glob("adapter_*"))  # a plain model: no PEFT needed to load it
    info = json.loads((output / MERGE_INFO).read_text())
    assert info["base_model"] == str(tiny_llama_dir)

    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter_dir)
    expected = scores(with_adapter, tiny_llama_dir)
    merged = scores(AutoModelForCausalLM.from_pretrained(output), output)
    base = scores(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tiny_llama_dir)
    assert merged == pytest.approx(expected, abs=1e-5)
    assert merged != pytest.approx(base, abs=1e-4)  # the adapter mattered


def test_merge_command_writes_the_folder(adapter_dir, tmp_path, capsys):
    assert main(["merge", "--adapter", str(adapter_dir), "--output", str(tmp_path / "cli_merged")]) == 0
    assert (tmp_path / "cli_merged" / "model.safetensors").is_file()
    assert "cli_merged" in capsys.readouterr().out


def test_merge_refuses_a_folder_that_is_not_empty(adapter_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        merge_adapter(str(adapter_dir), str(tmp_path / "taken"))
