"""Optimizer, scheduler and random-number state of a training checkpoint, without pickles.

transformers' Trainer saves these with torch.save and reads them back with torch.load; hatelens never
unpickles a file, so they are written as safetensors (tensors) + JSON (everything else) and read back
into the same structures. A checkpoint folder then holds only safetensors and JSON.
"""

import json
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
RNG_FILE = "rng_state.safetensors"
RNG_META_FILE = "rng_state.json"


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Per-parameter state tensors -> safetensors ("<param index>.<name>"); param groups -> JSON."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().cpu().contiguous()
               for index, slots in state["state"].items() for name, value in slots.items()}
    save_file(tensors, str(Path(folder) / OPTIMIZER_FILE))
    (Path(folder) / OPTIMIZER_META_FILE).write_text(json.dumps({"param_groups": state["param_groups"]}))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(Path(folder) / OPTIMIZER_FILE))
    groups = json.loads((Path(folder) / OPTIMIZER_META_FILE).read_text())["param_groups"]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_scheduler(scheduler, folder: Path) -> None:
    """A LambdaLR's counters (its lambdas are rebuilt from the config, as Trainer does)."""
    values = {key: value for key, value in scheduler.state_dict().items() if key != "lr_lambdas"}
    (Path(folder) / SCHEDULER_FILE).write_text(json.dumps(values))


def load_scheduler(scheduler, folder: Path) -> None:
    values = json.loads((Path(folder) / SCHEDULER_FILE).read_text())
    scheduler.load_state_dict({**scheduler.state_dict(), **values})


def save_rng(folder: Path) -> None:
    """Python, NumPy, torch CPU (and CUDA) generators: dropout masks and data order resume exactly."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {"torch_cpu": torch.random.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    save_file(tensors, str(Path(folder) / RNG_FILE))
    version, python_state, gauss = random.getstate()
    meta = {"python": [version, list(python_state), gauss],
            "numpy": {"kind": kind, "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)}}
    (Path(folder) / RNG_META_FILE).write_text(json.dumps(meta))


@contextmanager
def unchanged_rng():
    """Python, NumPy and torch (CPU, CUDA) generators left as they were before the block: whatever the block
    draws (a DataLoader takes a base seed from torch's generator each time it is iterated) is not drawn from
    the stream that comes after it."""
    python, numpy, torch_cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.random.set_rng_state(torch_cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def load_rng(folder: Path) -> bool:
    """Restore the generators; False when the checkpoint has no RNG state."""
    if not (Path(folder) / RNG_FILE).is_file():
        return False
    tensors = load_file(str(Path(folder) / RNG_FILE))
    meta = json.loads((Path(folder) / RNG_META_FILE).read_text())
    version, python_state, gauss = meta["python"]
    random.setstate((version, tuple(python_state), gauss))
    numpy = meta["numpy"]
    np.random.set_state((numpy["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.random.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [tensors[key] for key in sorted(tensors) if key.startswith("torch_cuda_")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    return True
