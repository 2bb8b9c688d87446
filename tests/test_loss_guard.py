"""A training run whose loss goes NaN or stays flat stops with one clear line (exit code 2), on a
tiny random Llama trained through the real `hatelens train` command."""

import json
import math
from pathlib import Path

import pytest

from hatelens.cli import main
from hatelens.errors import ModelError
from hatelens.training.callbacks import LossGuard

pytestmark = [
    # PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


def write_rows(path: Path, texts: list[str]) -> Path:
    rows = [{"id": f"r{index}", "text": text, "label": ("hate", "normal")[index % 2], "group": "lgbtq"}
            for index, text in enumerate(texts)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train_command(model_dir: Path, work: Path, train_texts: list[str], learning_rate: str, *overrides: str):
    train_file = write_rows(work / "train.jsonl", train_texts)
    val_file = write_rows(work / "val.jsonl", ["a post", "another post"])
    return ["train", "--model", str(model_dir), "--train-file", str(train_file), "--val-file", str(val_file),
            "--output-dir", str(work / "runs"), "--template", "compact", "--batch-size", "4", "--quiet",
            "--learning-rate", learning_rate, "grad_accum=1", "eval_batch_size=2", "lora.r=2", "lora.alpha=4",
            "lora.dropout=0", "logging_steps=1", "warmup_ratio=0", "eval_on_start=false",
            "eval_steps=100", "early_stopping_patience=null", *overrides]  # no evaluation before the guard acts


def test_a_diverging_loss_stops_the_run_with_one_line(tiny_llama_dir, tmp_path, capsys):
    # Adam moves each weight by about the learning rate: 1e30 overflows float32 activations at step 2
    args = train_command(tiny_llama_dir, tmp_path, [f"post {i}" for i in range(16)], "1e30", "epochs=1")
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training stopped at step 2/4: the loss is nan; lower learning_rate (now 1e+30)")


def test_a_flat_loss_stops_the_run(tiny_llama_dir, tmp_path, capsys):
    # the same batch every step and a learning rate too small to move a float32 weight: the loss never changes
    args = train_command(tiny_llama_dir, tmp_path, ["the same post"] * 4, "1e-30", "epochs=6")
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training stopped at step 5/6: the loss stayed at ")
    assert "over the last 5 logged steps, so nothing is being learned; raise learning_rate (now 1e-30)" in error


class State:
    global_step, max_steps = 7, 10


@pytest.mark.parametrize(("losses", "stops"), [
    ([2.0, 2.0, 2.0], True),
    ([2.0, 2.0 + 5e-7, 2.0], True),
    ([2.0, 2.0, 2.1], False),  # moving
    ([2.0, 2.0], False),  # too few logs to tell
    ([1e-5, 1e-5, 1e-5], False),  # learned: a tiny loss may stop moving
    ([2.0, math.inf], True),
])  # fmt: skip
def test_guard_decisions(losses, stops):
    guard = LossGuard(learning_rate=1e-4, flat_logs=3)
    try:
        for loss in losses:
            guard.on_log(None, State(), None, logs={"loss": loss})
            guard.on_log(None, State(), None, logs={"eval_loss": 9.0})  # evaluations do not count
    except ModelError:
        assert stops
    else:
        assert not stops
