"""`hatelens merge`: the merged model scores exactly like base + adapter (tiny random Llama)."""

import json
import shutil

import pytest
import yaml
from fixtures import lora_adapter
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens import runs
from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier
from hatelens.cli import main
from hatelens.errors import ConfigError
from hatelens.evaluation.metrics import compute_metrics
from hatelens.training.merge import MERGE_INFO, merge_adapter
from hatelens.training.model_card import card_for_adapter, write_model_card

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

TEXTS = ["vermin out of our country", "lovely tacos today", "a longer post about the middle east and its music"]


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir, tmp_path_factory):
    """A LoRA adapter with non-zero weights (as if trained), naming the tiny model as its base."""
    return lora_adapter(tiny_llama_dir, tmp_path_factory.mktemp("adapter"), seed=1)


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


def test_the_merged_model_card_names_base_data_and_per_group_rates(adapter_dir, tmp_path):
    run = tmp_path / "train_run"
    shutil.copytree(adapter_dir, run / "adapter")
    runs.write_json(run / "adapter" / "hatelens_training.json", {"base_model": "smollm2-135m", "template": "compact",
                                                                 "prompt_sha256": "abc123"})
    runs.write_json(run / "training_summary.json", {"config": {"train_file": "data/train.jsonl", "lora": {"r": 4}},
                                                    "n_train": 8, "epochs": [{"epoch": 0, "eval_loss": 0.7}]})
    evaluation = tmp_path / "20250101T000000Z_finetuned_test"
    labels, predictions = ["hate", "normal", "normal", "hate"], ["hate", "hate", "normal", "normal"]
    runs.write_json(evaluation / "metrics.json", compute_metrics(labels, predictions, [0.9, 0.6, 0.2, 0.4],
                                                                 ["lgbtq", "lgbtq", "mexican", "mexican"],
                                                                 n_bootstrap=10))
    card = card_for_adapter(run / "adapter", [evaluation])
    output = write_model_card(tmp_path / "card", merged=True, **card).read_text()
    meta = yaml.safe_load(output.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers" and "merged" in meta["tags"]
    assert "### 20250101T000000Z_finetuned_test" in output
    assert "| lgbtq | 2 | 0.6667 | 1.0000 | 0.0000 |" in output  # FPR 1/1, FNR 0/1
    assert "| mexican | 2 | 0.0000 | 0.0000 | 1.0000 |" in output
    assert "data/train.jsonl (8 examples)" in output


def test_merge_writes_the_model_card(adapter_dir, tmp_path):
    output = merge_adapter(str(adapter_dir), str(tmp_path / "merged_card"))
    card = (output / "README.md").read_text()
    assert "library_name: transformers" in card and "## Data licences" in card
