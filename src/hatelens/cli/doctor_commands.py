"""`hatelens doctor`: what is installed, where the data and models are; `--prepare` converts the
embedded GGUF models once so later loads take a second instead of half a minute."""

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="check the installation; --prepare converts the embedded models")
    parser.add_argument("--prepare", action="store_true", help="convert the embedded GGUF models to safetensors now")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from hatelens import runs
    from hatelens.backends import models

    for name, version in runs.versions().items():
        print(f"{name:<14}{version or 'not installed'}")
    for split in ("unified_train", "unified_val", "unified_test"):
        path = Path("data/unified") / f"{split}.json"
        print(f"{str(path):<40}{'ok' if path.is_file() else 'missing: run make setup'}")
    for split in ("train", "validation"):
        path = Path("data") / f"{split}.jsonl"
        print(f"{str(path):<40}{'ok' if path.is_file() else 'missing: run hatelens data split'}")
    for line in gpu_lines():
        print(line)
    print(f"model cache   {models.cache_dir()}")
    for alias in models.GGUF_ALIASES:
        source = models.resolve_model(alias)
        if args.prepare:
            models.load_model(source, tokenizer=models.load_tokenizer(source))
        converted = (models.cache_dir() / "converted" / alias).is_dir()
        print(f"{alias:<14}{'ready' if converted else 'GGUF only (converted on first use)'}")
    return 0


EXTRAS = {"train": ("trl", "peft", "datasets"), "serve": ("fastapi", "uvicorn"), "gguf": ("gguf",),
          "mxfp4 kernels": ("kernels", "triton")}


def gpu_lines() -> list[str]:
    """Each CUDA device (name, memory, bf16, versions) and the fast paths gpt-oss gets there; extras."""
    import importlib.util

    import torch

    lines = [f"torch         {torch.__version__} (CUDA {torch.version.cuda or 'none'})"]
    if not torch.cuda.is_available():
        lines.append("GPU           no CUDA device: models run on the CPU (fp32); no gpt-oss fast paths")
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        properties = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16 = torch.cuda.is_bf16_supported()
        lines.append(f"GPU {index}         {properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
                     f"compute {properties.major}.{properties.minor}, bf16 {'yes' if bf16 else 'no'}")
        fused = ("fused experts, norms and rotary (Triton), " if importlib.util.find_spec("triton")
                 else "no fused experts, norms or rotary (no Triton), ")
        lines.append(f"              gpt-oss fast paths: {fused}fused sink attention, no cuDNN, experts skip pads, "
                     "warm-up at load (inference); experts' gate recomputed in backward (training); compiled expert "
                     "gate (opt-in)")
    for extra, packages in EXTRAS.items():
        missing = [name for name in packages if importlib.util.find_spec(name) is None]
        lines.append(f"{extra:<14}{'installed' if not missing else 'missing: ' + ', '.join(missing)}")
    return lines
