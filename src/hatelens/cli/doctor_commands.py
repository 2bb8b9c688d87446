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
    print(f"model cache   {models.cache_dir()}")
    for alias in models.GGUF_ALIASES:
        source = models.resolve_model(alias)
        if args.prepare:
            models.load_model(source, tokenizer=models.load_tokenizer(source))
        converted = (models.cache_dir() / "converted" / alias).is_dir()
        print(f"{alias:<14}{'ready' if converted else 'GGUF only (converted on first use)'}")
    return 0
