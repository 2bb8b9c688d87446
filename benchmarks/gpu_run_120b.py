"""gpt-oss-120b's whole validation on one host of several GPUs, measured on `hatelens run` itself (issue 16).

    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    PYTHONPATH=src python benchmarks/gpu_run_120b.py --tokenizer outputs/bench/tokenizer --out $OUT
    ... --gpus 4                 # training processes (default: every visible GPU)
    ... --quick                  # small samples and one short epoch: the plumbing, in minutes
    ... --tiny --device cpu      # a 2-layer toy checkpoint only (checks this script's builder on a CPU)

1. Builds a random checkpoint of gpt-oss-120b's exact shape ON the machine, in the published MXFP4 format
   (experts as 4-bit blocks + scales, everything else bf16): 65 GB on disk, where bf16 (234 GB) would not fit
   the 128 GiB disk of a 2-GPU host. One decoder layer at a time, so no GPU or host holds the whole model.
   Loading dequantises the experts to bf16, as for the published weights without the `kernels` package.
2. Runs `hatelens run --config configs/run/gpt_oss_120b.yaml model=<folder> train_processes=<gpus>`: the
   evaluation steps split the layers over the GPUs (placement), training runs under `accelerate launch` (FSDP2).
3. Records the wall time of each pipeline step, the training figures (training_summary.json), the placement
   and scoring time of each evaluation (metrics.json run.timing), and the peak memory of every GPU sampled with
   nvidia-smi every second (both the evaluating process and the training processes count).
Writes OUT/gpu_run_120b.json (rewritten after each part, so a cut-off run keeps what it measured) and the logs.
Scores mean nothing (random weights); time and memory are real.
"""

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_gpt_oss as bench  # noqa: E402
from gpu_run import Results, stream  # noqa: E402

RUN_CONFIG = "configs/run/gpt_oss_120b.yaml"
MXFP4 = {"quant_method": "mxfp4", "modules_to_not_convert": [
    "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
SCALE = 119  # MXFP4 scale byte: 2**(119 - 127) = 1/256, so |weight| <= 6/256 (about the std-0.02 init's range)


def random_tensors(names_shapes: dict, device: str, seed: int) -> dict:
    """bf16 normal(0, 0.02) weights; norms one; biases and sinks zero."""
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors = {}
    for name, shape in names_shapes.items():
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16, device=device)
        elif name.endswith("bias") or name.endswith("sinks"):
            tensors[name] = torch.zeros(shape, dtype=torch.bfloat16, device=device)
        else:
            tensors[name] = (torch.randn(shape, generator=generator, device=device) * 0.02).to(torch.bfloat16)
    return tensors


def mxfp4_experts(prefix: str, config, device: str, seed: int) -> dict:
    """A layer's experts as the published checkpoint stores them: uint8 blocks (two 4-bit values a byte, 32 a
    block) and one uint8 exponent a block, plus bf16 biases."""
    generator = torch.Generator(device=device).manual_seed(seed)
    experts, hidden, inner = config.num_local_experts, config.hidden_size, config.intermediate_size
    shapes = {"gate_up_proj": (experts, 2 * inner, hidden // 32), "down_proj": (experts, hidden, inner // 32)}
    tensors = {}
    for proj, shape in shapes.items():
        blocks = torch.randint(0, 256, (*shape, 16), generator=generator, device=device, dtype=torch.int32)
        tensors[f"{prefix}{proj}_blocks"] = blocks.to(torch.uint8)
        tensors[f"{prefix}{proj}_scales"] = torch.full(shape, SCALE, dtype=torch.uint8, device=device)
        tensors[f"{prefix}{proj}_bias"] = torch.zeros(shape[:2], dtype=torch.bfloat16, device=device)
    return tensors


def build_checkpoint(tokenizer_dir: str, out: Path, *, tiny: bool, device: str) -> dict:
    """The folder hatelens loads: config.json (MXFP4), one safetensors shard a layer + the index, tokenizer."""
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = bench.gpt_oss_config("tiny" if tiny else "120b", tokenizer)
    with init_empty_weights():
        shapes = {name: tuple(p.shape) for name, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    groups = {"outer": [name for name in shapes if not name.startswith("model.layers.")]}
    for layer in range(config.num_hidden_layers):
        groups[f"layer{layer:02d}"] = [name for name in shapes if name.startswith(f"model.layers.{layer}.")]
    for index, (group, names) in enumerate(groups.items()):
        dense = {name: shapes[name] for name in names if ".mlp.experts." not in name}
        tensors = random_tensors(dense, device, seed=index)
        if group != "outer":
            tensors.update(mxfp4_experts(f"model.layers.{index - 1}.mlp.experts.", config, device, seed=1000 + index))
        shard = f"model-{group}.safetensors"
        save_file({name: tensor.contiguous().cpu() for name, tensor in tensors.items()}, out / shard,
                  metadata={"format": "pt"})
        total += sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
        weight_map.update(dict.fromkeys(tensors, shard))
        del tensors
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}, indent=1))
    config.quantization_config = MXFP4
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"folder": str(out), "layers": config.num_hidden_layers, "experts": config.num_local_experts,
            "gb_on_disk": round(total / 1e9, 2), "build_s": round(time.perf_counter() - started, 1)}


class GpuMemory:
    """Peak used memory of every GPU (all processes), sampled with nvidia-smi each second in a thread."""

    def __init__(self):
        self.peak_mib: dict[int, int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stopped.wait(1.0):
            result = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                    capture_output=True, text=True, check=False)
            for line in result.stdout.splitlines():
                index, used = (int(field) for field in line.split(","))
                self.peak_mib[index] = max(self.peak_mib.get(index, 0), used)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()

    def peaks_gib(self) -> dict[str, float]:
        return {f"cuda:{index}": round(mib / 1024, 1) for index, mib in sorted(self.peak_mib.items())}


def pipeline_run(args, model: Path, results: Results) -> None:
    root = Path(args.work) / "runs"
    command = [sys.executable, "-m", "hatelens", "run", "--config", RUN_CONFIG, "--quiet", f"model={model}",
               f"output_dir={root}", "name=gpu120b", f"train_processes={args.gpus}",
               "reference=false"]  # the MiniLM reference's model package is not on the GPU machine
    if args.quick:
        command += ["validation_samples=60", "test_samples=120", "suite_samples=60", "n_bootstrap=200",
                    "train_overrides=[max_train_samples=256, max_val_samples=64, epochs=1]"]
    with GpuMemory() as memory:
        run = stream(command, Path(args.out) / "hatelens_run.log", args.budget_s - results.elapsed())
    run["peak_gib_per_gpu"] = memory.peaks_gib()
    folder = max(root.glob("*gpu120b*"), default=None)
    if folder is not None:
        summary = max(folder.glob("02_train/*/training_summary.json"), default=None)
        if summary is not None:
            data = json.loads(summary.read_text())
            run["training"] = {key: data.get(key) for key in (
                "wall_s", "train_runtime_s", "train_samples_per_s", "n_train", "epochs_done", "steps",
                "early_stopped", "out_of_memory_backoffs", "speed", "processes")}
        for metrics in sorted(folder.glob("*/metrics.json")):
            info = json.loads(metrics.read_text())["run"]
            run[metrics.parent.name] = {"scoring_wall_s": info.get("scoring_wall_s"), "timing": info.get("timing")}
    results.add("hatelens_run", run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="the stand-in tokenizer (benchmarks/gpu_gpt_oss.py)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/bench120b", help="checkpoint and run folders (local disk)")
    parser.add_argument("--gpus", type=int, default=torch.cuda.device_count(), help="training processes")
    parser.add_argument("--budget-s", type=float, default=3000.0, help="the run is stopped after this")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="build a 2-layer toy checkpoint and stop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    results = Results(Path(args.out))
    model = Path(args.work) / ("gpt-oss-tiny-random" if args.tiny else "gpt-oss-120b-random")
    results.add("checkpoint", build_checkpoint(args.tokenizer, model, tiny=args.tiny, device=args.device))
    if not args.tiny:
        results.add("gpus", torch.cuda.device_count())
        pipeline_run(args, model, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
