"""hatelens as an installed package: shipped recipes, path resolution, file modes, extras, the wheel."""

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from fixtures import write_dataset

from hatelens import extras, resources, runs
from hatelens.backends.prompts import load_template
from hatelens.cli import main
from hatelens.config import EvalConfig, RunConfig, TrainConfig, load_config
from hatelens.errors import ConfigError
from hatelens.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_recipes_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_template("compact").name == load_template(str(ROOT / "configs/prompts/compact.yaml")).name
    assert load_config(TrainConfig, "cpu_small") == load_config(TrainConfig, ROOT / "configs/lora/cpu_small.yaml")
    # the README's spelling works outside a checkout too: configs/... is the packaged file
    assert load_config(TrainConfig, "configs/lora/quick_test.yaml") == load_config(TrainConfig, "quick_test")
    assert resources.find("suites", "suites/functional/hatelens_functional.csv").is_file()
    assert set(resources.shipped("lora")) >= {"cpu_small", "quick_test", "default"}
    with pytest.raises(ConfigError, match="no shipped lora recipe named 'cpu_smal'; shipped: cpu_small, default"):
        load_config(TrainConfig, "cpu_smal")


def test_paths_in_a_user_recipe_start_from_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    recipe = folder / "run.yaml"
    recipe.write_text("train_data: data/train.jsonl\ntest_data: /abs/test.json\ntemplate: compact\n"
                      "criteria: my_criteria.yaml\ntrain_recipe: cpu_small\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(RunConfig, "project/run.yaml", ["validation_data=val.jsonl"])
    assert config.train_data == str(folder / "data/train.jsonl")
    assert config.criteria == str(folder / "my_criteria.yaml")
    assert (config.test_data, config.template, config.train_recipe) == ("/abs/test.json", "compact", "cpu_small")
    assert config.validation_data == "val.jsonl"  # an override on the command line: from the current folder
    (folder / "eval.yaml").write_text("data: rows.jsonl\nmodel:\n  template: prompts/mine.yaml\n")
    config = load_config(EvalConfig, folder / "eval.yaml")
    assert (config.data, config.model.template) == (str(folder / "rows.jsonl"), str(folder / "prompts/mine.yaml"))


def test_shipped_run_recipe_names_data_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(RunConfig, "default")
    assert config.train_data == "data/train.jsonl"
    assert load_config(RunConfig, ROOT / "configs/run/default.yaml") == config


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, mask):
    previous = os.umask(mask)
    try:
        runs.write_json(tmp_path / "metrics.json", {"f1": 1})
        write_atomic(tmp_path / "rows.jsonl", "{}\n")
    finally:
        os.umask(previous)
    for name in ("metrics.json", "rows.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "rows.jsonl"]  # no staging files left


def test_a_missing_extra_is_one_line_naming_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    assert main(["train", "--config", "quick_test"]) == 2
    assert capsys.readouterr().err == ("error: hatelens train needs the train extra (trl not installed): "
                                       "pip install 'hatelens[train]'\n")
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ConfigError, match=r"hatelens serve needs the serve extra \(fastapi not installed\)"):
        extras.require("serve", "hatelens serve")


def _fresh_venv_with_the_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the sources, install it alone into a new venv that borrows the
    dependencies (not hatelens) from the venv running the tests."""
    source = work / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", work / "dist", source], check=True, env=env, capture_output=True, timeout=120)
    (wheel,) = (work / "dist").glob("hatelens-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    site = Path(subprocess.run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # A plain path line: the borrowed folder's own .pth files (the editable hatelens) are not processed.
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                    "-q", wheel], check=True, env=env, capture_output=True, timeout=120)
    return venv


def test_the_wheel_runs_a_baseline_from_an_empty_folder(tiny_llama_dir, tmp_path):
    venv = _fresh_venv_with_the_wheel(tmp_path)
    data = write_dataset(tmp_path / "rows.jsonl", n=12)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HATELENS_CACHE=str(tmp_path / "cache"))
    where = subprocess.run([venv / "bin/python", "-c", "import hatelens; print(hatelens.__file__)"], cwd=empty,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(venv)), where
    result = subprocess.run([venv / "bin/hatelens", "baseline", "--model", tiny_llama_dir, "--data", data,
                             "--template", "compact", "--batch-size", "4", "--quiet", "n_bootstrap=20"],
                            cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Total samples:      12" in result.stdout
    (run_dir,) = (empty / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file()
    installed = Path(where).parent
    for shipped in ("configs/lora/cpu_small.yaml", "configs/run/default.yaml", "configs/criteria/default.yaml",
                    "configs/accelerate/fsdp.yaml", "configs/suites/functional/hatelens_functional.csv",
                    "configs/suites/functional/templates.yaml", "chat_templates/gemma3.jinja"):
        assert (installed / shipped).is_file(), shipped


def test_the_wheel_walks_baseline_train_evaluate_compare_report_from_an_empty_folder(tiny_llama_dir, tmp_path):
    """Issue 12's bar: a fresh venv holding only the wheel (dependencies borrowed) runs the whole path."""
    venv = _fresh_venv_with_the_wheel(tmp_path)
    train = write_dataset(tmp_path / "train.jsonl", n=24)
    validation = write_dataset(tmp_path / "validation.jsonl", n=12, start=100)
    test = write_dataset(tmp_path / "test.jsonl", n=12, start=200)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HATELENS_CACHE=str(tmp_path / "cache"))

    def hatelens(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin/hatelens", *args], cwd=empty, env=env, capture_output=True, text=True,
                              timeout=300)

    common = ["--template", "compact", "--batch-size", "4", "--quiet", "n_bootstrap=20"]
    baseline = hatelens("baseline", "--model", tiny_llama_dir, "--data", test, *common)
    assert baseline.returncode == 0, baseline.stderr
    trained = hatelens("train", "--config", "quick_test", "--model", tiny_llama_dir, "--train-file", train,
                       "--val-file", validation, "--output-dir", "runs/train", "device=cpu")
    assert trained.returncode == 0, trained.stderr
    (adapter,) = (empty / "runs/train").glob("*/adapter")
    assert (adapter / "README.md").is_file()  # the model card
    finetuned = hatelens("evaluate", "--model", adapter, "--data", test, "--name", "finetuned", *common)
    assert finetuned.returncode == 0, finetuned.stderr
    base_run, tuned_run = (sorted(path for path in (empty / "runs").iterdir() if path.name != "train"))
    assert "finetuned" in tuned_run.name and (base_run / "metrics.json").is_file()
    compared = hatelens("compare", base_run, tuned_run, "--output-dir", "runs/comparison", "--n-bootstrap", "20")
    assert compared.returncode in (0, 1), compared.stderr  # 1: a criterion failed (a tiny random model)
    comparison = json.loads((empty / "runs/comparison/comparison.json").read_text())
    assert comparison["n"] == 12
    reported = hatelens("report", "runs/comparison")
    assert reported.returncode == 0, reported.stderr
    assert (empty / "runs/comparison/report.html").is_file()
