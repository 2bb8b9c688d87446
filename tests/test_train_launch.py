"""`hatelens run` with train_processes > 1: the training step as `accelerate launch -m hatelens train`
(training/launch.py), and the gpt-oss-120b recipe that uses it."""

import sys

import pytest

from hatelens import resources
from hatelens.config import RunConfig, TrainConfig, load_config
from hatelens.errors import ModelError
from hatelens.pipeline import Steps
from hatelens.training.launch import as_overrides, launch_command, launch_training


def test_the_launched_command_builds_the_training_config_the_in_process_step_would(tmp_path):
    run = load_config(RunConfig, "gpt_oss_120b", [f"output_dir={tmp_path}"])
    steps = Steps(run, tmp_path / "run", progress=False)
    values = steps.train_values("02_train")
    command = launch_command(run.train_recipe, [*as_overrides(values), *run.train_overrides],
                             processes=run.train_processes, accelerate_config=resources.find("accelerate", "fsdp"),
                             progress=False)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("-m", 3):command.index("--config")] == ["-m", "hatelens", "train"]
    start = command.index("--quiet") + 1
    # what `hatelens train --config <recipe> <overrides>` will load in the child processes
    launched = load_config(TrainConfig, command[command.index("--config") + 1], command[start:])
    assert launched == steps.train_config("02_train")
    assert launched.epochs == 3.0 and launched.output_dir == str(tmp_path / "run" / "02_train")
    assert launched.report_to == ["tensorboard"] and launched.name == "train"


def test_a_failed_launch_is_a_model_error_naming_the_log(tmp_path):
    with pytest.raises(ModelError, match=r"training under accelerate launch failed \(exit 3\); its log is .*/train"):
        launch_training([sys.executable, "-c", "raise SystemExit(3)", "--num_processes", "2"], tmp_path / "train")


def test_the_120b_recipe_evaluates_split_and_trains_under_accelerate():
    run = load_config(RunConfig, "gpt_oss_120b")
    assert run.placement == "auto" and run.train_processes == 2
    assert resources.find("accelerate", run.train_accelerate_config).name == "fsdp.yaml"
