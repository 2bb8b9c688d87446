"""Several processes (torch.distributed over gloo, on the CPU): `hatelens evaluate` under `accelerate launch`
splits the work and gathers one predictions.jsonl in data order, with the scores one process gives;
`hatelens train` trains data-parallel into one run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hatelens.config import EvalConfig, ModelConfig
from hatelens.evaluation.evaluate import PREDICTIONS, evaluate

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIG = ROOT / "configs" / "accelerate" / "multi_gpu.yaml"
VALIDATION = ROOT / "data" / "validation.jsonl"  # written by `hatelens data split`; synthetic rows without it
ROWS = 13  # with batch size 1, four chunks of 4, 4, 4, 1 rows: the two processes get unequal shares


@pytest.fixture
def small_data(tmp_path):
    rows = [json.loads(line) for line in VALIDATION.read_text().splitlines()[:ROWS]] if VALIDATION.is_file() else [
            {"id": f"r{i}", "text": f"post number {i} " * (i % 5 + 1), "label": ("hate", "normal")[i % 2],
             "group": ("lgbtq", "mexican", "middle_east")[i % 3]} for i in range(ROWS)]
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, [row["id"] for row in rows]


def _launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` with the shipped data-parallel config: two processes, CPU ones with --device cpu.

    (`accelerate launch --cpu --num_processes 2` starts one process where MPI is missing: the config's
    MULTI_GPU launcher, torchrun, is what starts several.)"""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--config_file", str(ACCELERATE_CONFIG), "--num_processes", "2",
               "--main_process_port", "0", *args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
                          check=False)  # each test asserts the return code, with stderr in its message


def test_two_processes_write_one_predictions_file_in_data_order(tiny_llama_dir, small_data, tmp_path):
    data_path, ids = small_data
    result = _launch(["-m", "hatelens", "evaluate", "--model", str(tiny_llama_dir), "--data", str(data_path),
                      "--output-dir", str(tmp_path / "runs"), "--batch-size", "1", "--device", "cpu", "--quiet",
                      "n_bootstrap=10"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Wrote:") == 1  # only the main process reports
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "config.yaml", "manifest.json", "metrics.json", PREDICTIONS, "summary.txt"]  # shard files merged away
    rows = [json.loads(line) for line in (run_dir / PREDICTIONS).read_text().splitlines()]
    assert [row["id"] for row in rows] == ids
    assert json.loads((run_dir / "metrics.json").read_text())["run"]["processes"] == 2

    single = evaluate(EvalConfig(data=str(data_path), output_dir=str(tmp_path / "single"), n_bootstrap=10,
                                 model=ModelConfig(model=str(tiny_llama_dir), batch_size=1, device="cpu")),
                      progress=False)
    by_id = {row["id"]: row["score"] for row in
             map(json.loads, (single.run_dir / PREDICTIONS).read_text().splitlines())}
    assert [row["score"] for row in rows] == pytest.approx([by_id[row_id] for row_id in ids], abs=1e-6)


def test_one_process_resumes_an_interrupted_multi_process_run(tiny_llama_dir, small_data, tmp_path):
    data_path, ids = small_data
    config = EvalConfig(data=str(data_path), output_dir=str(tmp_path / "runs"), n_bootstrap=10,
                        model=ModelConfig(model=str(tiny_llama_dir), batch_size=1, device="cpu"))
    finished = evaluate(config, progress=False)
    # Make it look cut off mid-run (chunks of 4 rows, shortest texts first): no metrics.json, the first
    # chunk in the main file, the third in the second process's file, the second and the last never written.
    lines = (finished.run_dir / PREDICTIONS).read_text().splitlines(keepends=True)  # a finished file: data order
    by_length = sorted(lines, key=lambda line: (len(json.loads(line)["text"]), json.loads(line)["id"]))
    (finished.run_dir / "metrics.json").unlink()
    (finished.run_dir / PREDICTIONS).write_text("".join(by_length[:4]))
    (finished.run_dir / "predictions.rank1.jsonl").write_text("".join(by_length[8:12]))
    resumed = evaluate(config, progress=False)
    assert resumed.run_dir == finished.run_dir and resumed.resumed_rows == 8
    assert not (finished.run_dir / "predictions.rank1.jsonl").exists()
    rows = [json.loads(line) for line in (finished.run_dir / PREDICTIONS).read_text().splitlines()]
    assert [row["id"] for row in rows] == ids  # each row once, in data order again
    assert [row["score"] for row in rows] == pytest.approx([json.loads(line)["score"] for line in lines], abs=1e-6)
    assert resumed.metrics["f1"] == finished.metrics["f1"]


def test_the_multi_gpu_recipes_load():
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers.models.gpt_oss import modeling_gpt_oss

    from hatelens.config import TrainConfig, load_config

    recipe = load_config(TrainConfig, ROOT / "configs" / "lora" / "gpt_oss_120b.yaml")
    assert recipe.model == "gpt-oss-120b" and recipe.dequantize_mxfp4
    fsdp = load_config_from_file(str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    getattr(modeling_gpt_oss, fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])  # the class exists
    assert load_config_from_file(str(ACCELERATE_CONFIG)).distributed_type == "MULTI_GPU"


@pytest.mark.slow  # two training processes: ~15 s
def test_two_processes_train_one_adapter(tiny_llama_dir, tmp_path):
    result = _launch(["-m", "hatelens", "train", "--model", str(tiny_llama_dir), "--device", "cpu", "--quiet",
                      "max_train_samples=16", "max_val_samples=8", "epochs=1", "batch_size=2", "grad_accum=1",
                      f"output_dir={tmp_path / 'runs'}",
                      f"train_file={ROOT / 'data' / 'train.jsonl'}", f"val_file={VALIDATION}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()  # the main process's folder, shared by the other
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list((run_dir / "tensorboard").iterdir())) == 1  # only the main process writes
    assert result.stderr.count("run folder") == 1  # the other process logs no progress
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["effective_batch_size"] == 4  # 2 per process, 2 processes
