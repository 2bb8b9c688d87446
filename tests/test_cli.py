"""The `hatelens` command end to end, as a user runs it (a real subprocess, a tiny model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def hatelens(*args, cwd=ROOT, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "hatelens", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_baseline_end_to_end_into_a_temp_folder(tiny_llama_dir, tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", n=30)
    result = hatelens("baseline", "--model", tiny_llama_dir, "--data", data, "--output-dir", tmp_path / "runs",
                      "--batch-size", "4", "n_bootstrap=50")
    assert result.returncode == 0, result.stderr
    for expected in ("Total samples:      30", "Valid predictions:  30 (100.0%)", "F1", "FPR", "FNR",
                     "lgbtq", "mexican", "middle_east", "Target to beat: F1 0.615", "Wrote:"):
        assert expected in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["n"] == 30


def test_seed_guide_spellings_are_accepted(tiny_llama_dir, tmp_path):
    data = write_dataset(tmp_path / "validation.jsonl", n=30)
    result = hatelens("baseline", "--model_name", tiny_llama_dir, "--data_file", data, "--output_dir",
                      tmp_path / "outputs", "--max_samples", "9", "--quiet", "n_bootstrap=20")
    assert result.returncode == 0, result.stderr
    assert "Total samples:      9" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt-oss-20b"], "openai/gpt-oss-20b is not in the local Hugging Face cache"),
    (["--model", "/no/such/folder"], "cannot load model from /no/such/folder"),
    (["--template", "nope"], "prompt template 'nope' not found"),
    (["model.batch_sise=3"], "unknown key(s) batch_sise"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_llama_dir, tmp_path, args, message):
    data = write_dataset(tmp_path / "data.jsonl", n=6)
    base = ["baseline", "--data", data, "--output-dir", tmp_path / "runs"]
    if "--model" not in args:
        base += ["--model", tiny_llama_dir]
    result = hatelens(*base, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))


def test_broken_data_file_names_file_and_line(tiny_llama_dir, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"text": "fine", "label": "hate"}\n{"text": "oops", "label": \n')
    result = hatelens("baseline", "--model", tiny_llama_dir, "--data", data, "--output-dir", tmp_path / "runs")
    assert result.returncode == 2
    assert f"{data}:2" in result.stderr


def test_help_lists_the_commands():
    result = hatelens("--help")
    assert result.returncode == 0
    # the first word of each indented line under "COMMAND" (a bare `"data" in stdout` would match any help text)
    listed = {line.split()[0] for line in result.stdout.split("COMMAND\n", 1)[1].split("\n\n")[0].splitlines()
              if line.startswith("    ") and not line.startswith("     ")}
    assert {"data", "baseline", "evaluate", "doctor", "train", "merge", "serve", "monitor", "compare", "calibrate",
            "report", "suite", "run", "sweep"} <= listed


def test_overrides_read_yaml_1_1_exponents_as_floats():
    from hatelens.config import TrainConfig, load_config

    config = load_config(TrainConfig, overrides=["learning_rate=1e-4", "warmup_ratio=5e-2", "epochs=2"])
    assert (config.learning_rate, config.warmup_ratio, config.epochs) == (1e-4, 0.05, 2.0)
