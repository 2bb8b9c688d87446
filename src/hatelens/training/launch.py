"""The training step of `hatelens run` as several processes: `accelerate launch`, one process per GPU.

A model no card holds (gpt-oss-120b: 234 GB of bf16 weights) trains with FSDP over the host's GPUs, which
needs one process per GPU from the start; `hatelens run` itself stays one process, evaluates with the model's
layers split over the same GPUs (backends/placement.py) and starts training as the command a user would type:

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes N \\
        -m hatelens train --config <train_recipe> --resume model=... template=... output_dir=... <train_overrides>

The run's own values go in as `key=value` overrides written as JSON (which YAML reads back exactly), then the
run's train_overrides, so the child builds the TrainConfig the in-process step would. `--resume` continues an
unfinished training in the step's folder, as the in-process step does.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

from hatelens.errors import ModelError

logger = logging.getLogger(__name__)


def as_overrides(values: dict) -> list[str]:
    """{"epochs": 2.0, "name": "train"} -> ["epochs=2.0", 'name="train"']."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def launch_command(recipe: str | Path, overrides: list[str], *, processes: int, accelerate_config: str | Path,
                   progress: bool = True) -> list[str]:
    """The `accelerate launch ... -m hatelens train` command line, run with this Python."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
            "--num_processes", str(processes), "-m", "hatelens", "train", "--config", str(recipe), "--resume",
            *([] if progress else ["--quiet"]), *overrides]


def launch_training(command: list[str], container: Path) -> None:
    """Run the training processes to the end (their output goes to this terminal); ModelError if they fail."""
    logger.info("training as %s processes: %s", command[command.index("--num_processes") + 1], " ".join(command))
    finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        raise ModelError(f"training under accelerate launch failed (exit {finished.returncode}); its log is "
                         f"{container}/*/train.log. Run the same `hatelens run` again to resume it")
