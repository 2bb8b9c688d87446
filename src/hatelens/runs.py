"""Run folders: where every reported figure comes from.

runs/<UTC timestamp>_<name>/ holds config.yaml (what ran), manifest.json (versions, git commit,
data and prompt hashes, model, machine) and the step's results. Files are written atomically, so an
interrupted run never leaves a half-written result behind.
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import yaml

from hatelens.config import to_dict
from hatelens.data.formats import iter_jsonl_lines, loads_line, read_utf8
from hatelens.data.labels import encode_predictions
from hatelens.errors import ConfigError, DataError
from hatelens.files import write_atomic

PACKAGES = ("hatelens", "torch", "transformers", "peft", "trl", "accelerate", "scikit-learn", "fairlearn",
            "numpy", "gguf")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: Path, value) -> None:
    write_atomic(path, yaml.safe_dump(value, sort_keys=False, allow_unicode=True))


def versions() -> dict:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> str | None:
    """The commit of the hatelens checkout, with '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def manifest(**fields) -> dict:
    """Everything needed to trace a figure back: versions, commit, machine, plus the step's own fields."""
    return {"created_utc": utc_stamp(), "command": " ".join(sys.argv), "git_commit": git_commit(),
            "versions": versions(), "machine": machine(), **fields}


def config_hash(config, *, digits: int = 16, **inputs) -> str:
    """A run's identity: its config (less output_dir: where it is written is not what it is) plus
    `inputs` (e.g. the hash of the examples it reads), as `digits` hex digits. The same identity
    resumes the same run."""
    identity = {**to_dict(config), **inputs}
    identity.pop("output_dir", None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:digits]


def find_unfinished(output_dir: Path, config_hash: str, done_file: str) -> Path | None:
    """The newest run folder of the same config whose final file is missing: resume it."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for folder in sorted(output_dir.iterdir(), reverse=True):
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file() or (folder / done_file).exists():
            continue
        if json.loads(manifest_path.read_text()).get("config_hash") == config_hash:
            return folder
    return None


def check_output_dir(output_dir: Path) -> None:
    """ConfigError when `output_dir`, or a folder above it, exists but is not a folder."""
    for path in (Path(output_dir), *Path(output_dir).parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"output folder {output_dir}: {path} is a file, not a folder; "
                                  "choose another output_dir (or move the file)")
            return


def new_run_dir(output_dir: Path, name: str) -> Path:
    check_output_dir(output_dir)
    folder = Path(output_dir) / f"{utc_stamp()}_{name}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path(output_dir) / f"{utc_stamp()}_{name}_{suffix}"
    folder.mkdir(parents=True)
    return folder


# -- reading a finished run folder back ------------------------------------------------------
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"


@dataclass
class FinishedRun:
    """A run folder whose metrics.json exists (written last, so the run is complete)."""

    run_dir: Path
    rows: list[dict]  # predictions.jsonl, in file order
    metrics: dict
    config: dict

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def data_file(self) -> str:
        return str(self.metrics.get("run", {}).get("data") or self.config.get("data"))

    def arrays(self) -> dict[str, np.ndarray]:
        """y_true, y_pred (an invalid answer counts as the wrong class), invalid, scores (NaN: none), groups."""
        y_true, y_pred, invalid = encode_predictions([row["label"] for row in self.rows],
                                                     [row["prediction"] for row in self.rows])
        scores = np.array([np.nan if row["score"] is None else row["score"] for row in self.rows], dtype=float)
        groups = np.array([row["group"] for row in self.rows], dtype=object)
        return {"y_true": y_true, "y_pred": y_pred, "invalid": invalid, "scores": scores, "groups": groups}


def load_finished_run(run_dir: str | Path) -> FinishedRun:
    """The run at `run_dir` (or the one a results file from `--output-file` names); DataError when it is
    missing or unfinished."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".json" and run_dir.is_file():
        run_dir = _run_dir_of_results_file(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} not found; pass a folder under runs/ written by `hatelens evaluate`")
    for name in (PREDICTIONS, METRICS):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir} has no {name}: not a finished evaluation run; "
                            "run the same `hatelens evaluate` command again to finish it")
    path = run_dir / PREDICTIONS
    rows = [loads_line(line, f"{path}:{number}") for number, line in iter_jsonl_lines(read_utf8(path))]
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
    return FinishedRun(run_dir=run_dir, rows=rows, metrics=metrics, config=config or {})


def _run_dir_of_results_file(path: Path) -> Path:
    """The run folder a results file (`hatelens evaluate --output-file`) was copied from."""
    try:
        named = json.loads(path.read_text(encoding="utf-8")).get("run_dir")
    except (json.JSONDecodeError, AttributeError):
        named = None
    if not isinstance(named, str):
        raise DataError(f"{path}: not a results file of `hatelens evaluate --output-file` (no run_dir); "
                        "pass the run folder")
    return Path(named)
