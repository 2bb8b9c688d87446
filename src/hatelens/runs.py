"""Run folders: where every reported figure comes from.

runs/<UTC timestamp>_<name>/ holds config.yaml (what ran), manifest.json (versions, git commit,
data and prompt hashes, model, machine) and the step's results. Files are written atomically, so an
interrupted run never leaves a half-written result behind.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = ("hatelens", "torch", "transformers", "peft", "trl", "accelerate", "scikit-learn", "fairlearn",
            "numpy", "gguf")


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, path)


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


def new_run_dir(output_dir: Path, name: str) -> Path:
    folder = Path(output_dir) / f"{utc_stamp()}_{name}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path(output_dir) / f"{utc_stamp()}_{name}_{suffix}"
    folder.mkdir(parents=True)
    return folder
