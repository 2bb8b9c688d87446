"""LoRA training on tiny random Llama / GPT-OSS models: records, what moves, resume, OOM back-off,
and evaluating the adapter exactly as a baseline is evaluated."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import WeightWatch, tiny_train_config
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback

from hatelens.backends import models, prompts
from hatelens.backends.hf import HFClassifier
from hatelens.backends.text_scores import score_texts
from hatelens.cli import build_parser
from hatelens.cli.train_commands import build_config
from hatelens.config import TrainConfig, load_config
from hatelens.data import Example
from hatelens.errors import ConfigError, ModelError
from hatelens.training import records as sft_data
from hatelens.training.summary import _loss_verdict
from hatelens.training.train import train

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "lora"


# -- records ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_records_are_the_scoring_tokens_with_the_prompt_masked(fixture, request):
    folder = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = prompts.load_template("baseline")
    model = models.load_model(models.resolve_model(str(folder)))
    scorer = HFClassifier(model, tokenizer, template)
    for label in ("hate", "normal"):
        record = sft_data.tokenize_example(Example("x", "some post about tacos", label, "mexican", "t"),
                                           template, tokenizer)
        prompt = scorer.encode("some post about tacos")
        answer = dict(scorer._answers)[label]
        assert record["input_ids"] == prompt + answer
        assert record["labels"] == [sft_data.IGNORE_INDEX] * len(prompt) + answer
        assert tokenizer.eos_token_id not in record["input_ids"][len(prompt):]  # no EOS after the answer


# -- training -----------------------------------------------------------------------------------------
def test_only_lora_weights_move_and_validation_loss_falls(llama_run):
    result, watch, _ = llama_run
    moved = {name for name in watch.before if not torch.equal(watch.before[name], watch.after[name])}
    assert moved and all("lora_" in name for name in moved)
    assert any("lora_B" in name for name in moved)
    losses = [evaluation["eval_loss"] for evaluation in result.summary["evaluations"]]
    assert losses[-1] < losses[0]
    assert result.summary["validation_loss_improved"] is True
    assert result.summary["trainable_parameters"] < result.summary["total_parameters"] / 2


def test_run_folder_holds_adapter_summary_logs_and_no_pickles(llama_run, tiny_llama_dir):
    result, _, _ = llama_run
    run = result.run_dir
    for name in ("config.yaml", "manifest.json", "training_summary.json", "train.log"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert (result.adapter_dir / "tokenizer.json").is_file()
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(Path(tiny_llama_dir).resolve())
    pickles = [path for path in run.rglob("*") if path.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert pickles == []
    assert "evaluation at step" in (run / "train.log").read_text()
    summary = result.summary
    assert summary["best"]["metric"] == "eval_loss" and summary["best"]["checkpoint"].startswith("checkpoint-")
    assert [row["epoch"] for row in summary["epochs"]] == [0, 1, 2]
    assert summary["effective_batch_size"] == 4


def test_gpt_oss_trains_lora_on_attention_and_experts(tiny_gpt_oss_dir, tmp_path):
    watch = WeightWatch()
    config = tiny_train_config(tiny_gpt_oss_dir, tmp_path, "epochs=1", "eval_on_start=false", "lora.dropout=0",
                               "lora.target_modules=[q_proj, v_proj]",
                               "lora.target_parameters=[mlp.experts.gate_up_proj, mlp.experts.down_proj]")
    result = train(config, progress=False, callbacks=(watch,))
    moved = {name for name in watch.before if not torch.equal(watch.before[name], watch.after[name])}
    assert moved and all("lora_" in name for name in moved)
    assert any("experts" in name for name in moved) and any("q_proj" in name for name in moved)
    assert result.summary["train_loss"] > 0


# -- resume ---------------------------------------------------------------------------------------------
class StopAfterFirstSave(TrainerCallback):
    """What Ctrl-C does once a checkpoint is on disk."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_resume_after_a_kill_reproduces_the_uninterrupted_adapter(llama_run, tiny_llama_dir, tmp_path):
    uninterrupted, _, _ = llama_run
    config = tiny_train_config(tiny_llama_dir, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(config, score_texts=score_texts, progress=False, callbacks=(StopAfterFirstSave(),))
    resumed = train(config, score_texts=score_texts, progress=False, resume=True)
    assert resumed.summary["resumed_from"].endswith("checkpoint-2")
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the same run folder, continued
    expected = load_file(uninterrupted.adapter_dir / "adapter_model.safetensors")
    actual = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4)


def test_an_evaluation_before_training_changes_nothing_that_is_trained(llama_run, tiny_llama_dir, tmp_path):
    with_it, _, _ = llama_run  # eval_on_start=true, dropout 0.1: every step draws masks from torch's generator
    without = train(tiny_train_config(tiny_llama_dir, tmp_path, "eval_on_start=false"), score_texts=score_texts,
                    progress=False)
    expected = load_file(with_it.adapter_dir / "adapter_model.safetensors")
    actual = load_file(without.adapter_dir / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=0, rtol=0)


# -- out of memory ----------------------------------------------------------------------------------------
def fail_batches_above(monkeypatch, limit: int) -> None:
    """Every training forward pass over more than `limit` rows raises CUDA's out-of-memory error."""
    load_model = models.load_model

    def load_model_that_runs_out_of_memory(*args, **kwargs):
        model = load_model(*args, **kwargs)

        def check(module, positional, named):
            if module.training and named["input_ids"].shape[0] > limit:
                raise torch.OutOfMemoryError("simulated: CUDA out of memory")

        model.register_forward_pre_hook(check, with_kwargs=True)
        return model

    monkeypatch.setattr(models, "load_model", load_model_that_runs_out_of_memory)


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch(tiny_llama_dir, tmp_path, monkeypatch):
    fail_batches_above(monkeypatch, 2)
    config = tiny_train_config(tiny_llama_dir, tmp_path, "epochs=1", "batch_size=8", "grad_accum=1",
                               "eval_on_start=false")
    result = train(config, progress=False)
    summary = result.summary
    assert (summary["per_device_batch_size"], summary["grad_accum"], summary["effective_batch_size"]) == (2, 4, 8)
    assert summary["out_of_memory_backoffs"] == [{"batch_size": 4, "grad_accum": 2}, {"batch_size": 2, "grad_accum": 4}]
    assert "out of memory: per-device batch halved to 2" in (result.run_dir / "train.log").read_text()


def test_out_of_memory_at_batch_one_stops_with_a_clear_error(tiny_llama_dir, tmp_path, monkeypatch):
    fail_batches_above(monkeypatch, 0)
    config = tiny_train_config(tiny_llama_dir, tmp_path, "epochs=1", "batch_size=2", "eval_on_start=false")
    with pytest.raises(ModelError, match="out of memory at batch size 1"):
        train(config, progress=False)


def test_train_command_prints_the_run_and_the_next_command(tiny_llama_dir, tmp_path, capsys):
    from hatelens.cli import main

    tiny_train_config(tiny_llama_dir, tmp_path)  # writes the data files
    code = main(["train", "--model_name", str(tiny_llama_dir), "--train_file", str(tmp_path / "train.jsonl"),
                 "--val_file", str(tmp_path / "val.jsonl"), "--output_dir", str(tmp_path / "runs"), "--epochs", "1",
                 "--batch_size", "4", "--lora_rank", "4", "--quiet", "template=compact", "eval_on_start=false"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Best:" in printed and "epoch 1: train_loss" in printed
    assert f"Next:     hatelens evaluate --model {tmp_path / 'runs'}" in printed and "--template compact" in printed


# -- configuration ----------------------------------------------------------------------------------------------
def test_seed_flags_and_key_value_overrides_reach_the_config():
    args = build_parser().parse_args([
        "train", "--model_name", "gemma3-270m", "--train_file", "a.jsonl", "--val_file", "b.jsonl",
        "--output_dir", "out", "--lora_rank", "8", "--lora_alpha", "16", "--lora_dropout", "0.2", "--epochs", "1",
        "--batch_size", "2", "--learning_rate", "0.0005", "warmup_ratio=0.1", "lora.target_modules=all-linear",
    ])
    config = build_config(args)
    assert (config.model, config.train_file, config.val_file, config.output_dir) == \
        ("gemma3-270m", "a.jsonl", "b.jsonl", "out")
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (8, 16, 0.2)
    assert (config.epochs, config.batch_size, config.learning_rate, config.warmup_ratio) == (1.0, 2, 0.0005, 0.1)
    assert config.lora.target_modules == "all-linear"


@pytest.mark.parametrize("recipe", ["default", "high_capacity", "memory_efficient", "quick_test", "cpu_small",
                                    "gpt_oss_20b"])
def test_every_recipe_loads_and_opens_with_its_command(recipe):
    path = RECIPES / f"{recipe}.yaml"
    assert path.read_text().splitlines()[0] == f"# hatelens train --config configs/lora/{recipe}.yaml"
    config = load_config(TrainConfig, path)
    assert config.lora.r > 0 and config.learning_rate > 0


def test_a_validation_loss_that_never_improves_is_flagged():
    improved, warnings = _loss_verdict([{"eval_loss": 0.7}, {"eval_loss": 0.6}])
    assert improved is True and warnings == []
    improved, warnings = _loss_verdict([{"eval_loss": 0.7}, {"eval_loss": 0.7}, {"eval_loss": 0.9}])
    assert improved is False and "never improved on its first value 0.7000" in warnings[0]


def test_f1_at_thresholds_by_hand():
    import numpy as np

    from hatelens.training.trainer import f1_at_thresholds

    truth = np.array([True, True, False, False])
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    # t=0.5: predicted [1,0,1,0] -> tp 1, fp 1, fn 1 -> F1 0.5; t=0.3: [1,1,1,0] -> tp 2, fp 1 -> 0.8; t=0.95: none -> 0
    assert f1_at_thresholds(truth, scores, np.array([0.5, 0.3, 0.95])) == pytest.approx([0.5, 0.8, 0.0])


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt_oss_dir"])
def test_sharing_the_prompt_opening_changes_neither_loss_nor_gradients(fixture, request, tmp_path):
    from hatelens.training.train import Records, TrainingSetup, build_trainer, load_base_model, load_splits

    folder = request.getfixturevalue(fixture)
    config = tiny_train_config(folder, tmp_path, "lora.dropout=0")
    source = models.resolve_model(str(folder))
    tokenizer = models.load_tokenizer(source)
    template = prompts.load_template("compact")
    dataset = sft_data.build_dataset(load_splits(config)[0], template, tokenizer, max_length_tokens=512, where="t")
    opening = sft_data.shared_opening([dataset])
    assert len(opening) >= 8
    model = load_base_model(config, source, tokenizer, torch.float32, "cpu")
    setup = TrainingSetup(config=config, run_dir=tmp_path, source=source, tokenizer=tokenizer,
                          records=Records(dataset, dataset, opening), validation=None, resume_from=None, main=True,
                          progress=False, callbacks=())
    trainer = build_trainer(setup, model, batch_size=4, grad_accum=1)
    batch = trainer.data_collator([dataset[index] for index in range(4)])
    assert len(set(batch["attention_mask"].sum(dim=1).tolist())) > 1  # rows of different lengths: padding on

    def loss_and_gradients(shared):
        trainer.shared_opening = shared
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        return loss.item(), {name: value.grad.clone() for name, value in trainer.model.named_parameters()
                             if value.requires_grad and value.grad is not None}

    plain_loss, plain_gradients = loss_and_gradients(None)
    shared_loss, shared_gradients = loss_and_gradients(opening)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain_gradients.keys() == shared_gradients.keys() and plain_gradients
    for name in plain_gradients:
        torch.testing.assert_close(shared_gradients[name], plain_gradients[name], atol=1e-6, rtol=1e-4)


@pytest.mark.slow
def test_quick_test_recipe_trains_the_embedded_model(tmp_path):
    """The whole path on the real embedded model (about two minutes on a 2-core CPU)."""
    config = load_config(TrainConfig, RECIPES / "quick_test.yaml", [f"output_dir={tmp_path}"])
    result = train(config, score_texts=score_texts, progress=False)
    losses = [evaluation["eval_loss"] for evaluation in result.summary["evaluations"]]
    assert losses[-1] < losses[0]  # the label word became likelier on held-out rows
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "smollm2-135m"


def test_the_adapter_carries_a_model_card(llama_run):
    result, _, _ = llama_run
    card = (result.adapter_dir / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "peft" and meta["license"] == "other"  # a local base model: licence unknown
    assert {"hatelens", "hate-speech-detection", "lora", "peft"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is no Hub id
    for section in ("## Prompt template", "## Training", "### Validation during training", "## Evaluation",
                    "## Intended use", "## Limitations", "## Data licences"):
        assert section in body, section
    assert "`compact` (sha256 " in body and "HateXplain** (Mathew et al., AAAI 2021): CC-BY-4.0" in body
    epochs = [line.split("|")[1].strip() for line in body.splitlines() if line.startswith("| ") and
              line.split("|")[1].strip().isdigit()]
    assert epochs == ["0", "1", "2"]
    assert "No test evaluation is recorded here yet" in body


def test_adapters_on_chosen_layers_leave_the_others_frozen(tiny_llama_dir, tmp_path):
    from safetensors.torch import load_file

    with pytest.raises(ConfigError, match="layers_to_transform needs lora.target_modules as a list"):
        train(tiny_train_config(tiny_llama_dir, tmp_path, "lora.layers_to_transform=[1]",
                                "lora.target_modules=all-linear"), progress=False)
    result = train(tiny_train_config(tiny_llama_dir, tmp_path, "epochs=1", "lora.layers_to_transform=[1]",
                                     "lora.target_modules=[q_proj, v_proj, down_proj]"), progress=False)
    names = list(load_file(str(result.adapter_dir / "adapter_model.safetensors")))
    assert names and all(".layers.1." in name for name in names)
    assert {name.split(".layers.1.")[1].split(".lora_")[0] for name in names} == {
        "self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}


def test_the_opening_falls_back_to_the_eager_pass_where_no_graph_can_be_captured(tiny_llama_dir, caplog):
    """graphed_opening.py: graphs need CUDA; a model where none can be captured gets None (the caller runs the
    opening eagerly), a warning saying why, and no second try for the same opening."""
    from hatelens.training import graphed_opening

    model = models.load_model(models.resolve_model(str(tiny_llama_dir)), dtype=torch.float32, device="cpu")
    model.train()
    assert not graphed_opening.enabled(model)  # on a CPU the eager pass is used without trying
    ids = torch.tensor([[1, 2, 3, 4]])
    with caplog.at_level("WARNING"):
        assert graphed_opening.opening_cache(model, model, ids, models.cache_argument(model)) is None
    assert "could not be captured as a CUDA graph" in caplog.text
    assert graphed_opening._GRAPHS[model] == {(1, 2, 3, 4): None}
