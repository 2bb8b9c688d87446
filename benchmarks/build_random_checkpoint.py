"""A model folder with gpt-oss-20b's exact shape and random bf16 weights, built on the GPU.

No gpt-oss weights reach the GPU machine (40 GB cannot travel), so the product's own commands are
measured on this folder: safetensors + config.json + the stand-in tokenizer (benchmarks/gpu_gpt_oss.py
`tokenizer`). Scores mean nothing; time and memory are real.

    PYTHONPATH=src python benchmarks/build_random_checkpoint.py --tokenizer outputs/bench/tokenizer \
        --out /tmp/gpt-oss-20b-random                 # 20.9B parameters, ~39 GiB, under 3 minutes
    ... --layers 2                                    # a shallow model of the same width (smoke runs)
    ... --tiny --device cpu                           # a 2-layer toy (CPU checks of the scripts)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_gpt_oss import gpt_oss_config  # noqa: E402


def build(tokenizer_dir: str, out: str, *, layers: int | None = None, tiny: bool = False,
          device: str = "cuda") -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = gpt_oss_config("tiny" if tiny else "20b", tokenizer)
    if layers:
        config.num_hidden_layers = layers
        config.layer_types = config.layer_types[:layers]
    torch.manual_seed(0)
    with torch.device(device):  # weights made where they are, in bf16: no fp32 or host copy
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    built_s = time.perf_counter() - started
    model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    result = {"folder": out, "layers": config.num_hidden_layers, "parameters": sum(p.numel() for p in model.parameters()),
              "build_s": round(built_s, 1), "total_s": round(time.perf_counter() - started, 1),
              "gib_on_disk": round(sum(f.stat().st_size for f in Path(out).glob("*.safetensors")) / 2**30, 2)}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, help="fewer decoder layers (same width): smoke runs")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy of small width (CPU checks)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.tokenizer, args.out, layers=args.layers, tiny=args.tiny, device=args.device)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
