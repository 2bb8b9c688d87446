"""gpt-oss-20b on one GPU: the variants of training and evaluation, side by side in one process or call.

    PYTHONPATH=src python benchmarks/gpu_variants.py --model /tmp/gpt-oss-20b-random --out $OUT
    (normally through `bash benchmarks/gpu_session.sh variants`, which builds the random checkpoint first)

1. Training: `hatelens train --config configs/lora/gpt_oss_20b.yaml` itself, one epoch of every training
   row with the trainer's own token-budget sampler, at several `max_batch_tokens`, with the experts' gate
   recomputed in backward (the default) and without (`recompute_expert_gate=false`). Samples/s and peak
   memory are read from each run's training_summary.json (the first step, compilation and warm-up, apart).
2. Evaluation of the 1,009 test texts through `HFClassifier.classify` (what `hatelens evaluate` calls):
   at several batch shapes: as shipped (fused_kernels.py's Triton kernels, the experts skipping pads), with
   transformers' experts and norms instead, and with the Triton kernels on every padded token; then one warm call
   part by part (prompt rendering and tokenizing, the shared opening, the batches) and its CUDA kernels
   (torch.profiler), so that the utilisation figure of gpu_run.md has a breakdown.
Writes OUT/gpu_variants.json and OUT/gpu_variants.md (rewritten after each part: a cut-off run keeps what it has).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_gpt_oss as bench  # noqa: E402

RECIPE = "configs/lora/gpt_oss_20b.yaml"
TEST = "data/unified/unified_test.json"
# (name, overrides): one epoch each; the recipe's own budget first
TRAIN_VARIANTS = [
    ("1536 tokens, eager gate", ["max_batch_tokens=1536", "recompute_expert_gate=false"]),
    ("1536 tokens, recomputed gate", ["max_batch_tokens=1536"]),
    ("1792 tokens, recomputed gate", ["max_batch_tokens=1792"]),
    ("2048 tokens, recomputed gate", ["max_batch_tokens=2048"]),
    ("2304 tokens, recomputed gate", ["max_batch_tokens=2304"]),
]
EVAL_SHAPES = [(256, 32768), (128, 16384), (512, 65536), (1024, 131072)]  # (rows, tokens) a batch


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def save(out: Path, data: dict) -> None:
    (out / "gpu_variants.json").write_text(json.dumps(data, indent=2))
    (out / "gpu_variants.md").write_text(markdown(data))


def train_variants(args, data: dict, out: Path) -> None:
    rows = data.setdefault("training", {})
    for name, overrides in TRAIN_VARIANTS:
        if time.monotonic() > args.deadline - 75:
            rows[name] = {"skipped": "out of time"}
            continue
        work = Path(args.work) / name.replace(" ", "_").replace(",", "")
        command = [sys.executable, "-m", "hatelens", "train", "--config", RECIPE, "--quiet", f"model={args.model}",
                   "epochs=1", "eval_on_start=false", f"output_dir={work}", "name=variant", *overrides, *args.extra]
        started = time.perf_counter()
        with open(out / f"train_{work.name}.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(30, args.deadline - time.monotonic() - 20))
        summaries = sorted(work.glob("*/training_summary.json"))
        row = {"command": " ".join(command[1:]), "returncode": done.returncode,
               "wall_s": round(time.perf_counter() - started, 1)}
        if summaries:
            summary = json.loads(summaries[-1].read_text())
            speed = summary.get("speed") or summary
            row.update({key: speed.get(key) for key in ("steady_samples_per_s", "first_step_s", "peak_memory_gb",
                                                        "peak_memory_gib", "steps_timed")})
            row["batches"] = summary.get("batches")
        rows[name] = row
        save(out, data)


def eval_variants(args, data: dict, out: Path) -> None:
    from hatelens.backends import fast_paths, fused_kernels, prompts
    from hatelens.backends.hf import HFClassifier, load_for_inference
    from hatelens.config import ModelConfig
    from hatelens.data import load_examples

    report: dict = {}
    model, tokenizer, _ = load_for_inference(ModelConfig(model=args.model), report=report)
    texts = [example.text for example in load_examples(TEST).examples]
    template = prompts.load_template("baseline")
    result = data.setdefault("evaluation", {"texts": len(texts), "experts": report.get("experts"),
                                            "speedups": report.get("applied")})
    shapes = {}
    # as shipped (Triton kernels, experts on real tokens only, batch cuts planned), the batches filled in turn,
    # transformers' rotary (the other kernels kept), transformers' experts, norms and rotary, Triton on every token
    for fused, packed, planned, rotary in ((True, True, True, True), (True, True, False, True), (True, True, True, False),
                                           (False, True, True, False), (True, False, True, True)):
        (fast_paths.pack_moe_tokens if packed else fast_paths.unpack_moe_tokens)(model)
        (fused_kernels.use_fused_kernels if fused else fused_kernels.unfuse)(model)
        if fused and not rotary:
            fused_kernels.unfuse_rotary(model)
        for rows, tokens in EVAL_SHAPES if fused and packed and planned and rotary else EVAL_SHAPES[:1]:
            classifier = HFClassifier(model, tokenizer, template, batch_size=rows, max_batch_tokens=tokens)
            classifier.batch_cost_share = classifier.batch_cost_share if planned else None
            walls = []
            for _ in range(3):
                synchronize()
                started = time.perf_counter()
                classifier.classify(texts)
                walls.append(round(time.perf_counter() - started, 3))
            kernels = ("Triton kernels" if rotary else "Triton kernels but transformers' rotary") if fused else \
                "transformers' experts, norms and rotary"
            name = (f"{rows} rows / {tokens} tokens, {kernels}, experts {'skip pads' if packed else 'on every token'}, "
                    f"batches {'planned' if planned else 'filled in turn'}")
            shapes[name] = {"first_s": walls[0], "warm_s": walls[1:],
                            "batches": classifier.timing["later_batches"] // 3 + 1}
            if "scores" not in result:  # as shipped: kept to compare code versions on the same checkpoint
                result["scores"] = [round(output.score, 6) for output in classifier.classify(texts)]
            result["shapes"] = shapes
            save(out, data)
    fast_paths.pack_moe_tokens(model)
    fused_kernels.use_fused_kernels(model)
    classifier = HFClassifier(model, tokenizer, template, batch_size=256, max_batch_tokens=32768)
    classifier.classify(texts)
    for parallel in ("true", "false"):  # the Rust tokenizer reads it at each call; users' default is true
        os.environ["TOKENIZERS_PARALLELISM"] = parallel
        result[f"breakdown, TOKENIZERS_PARALLELISM={parallel}"] = breakdown(classifier, texts)
        save(out, data)
    result["kernels"] = profile(classifier, texts, out)
    save(out, data)


def breakdown(classifier, texts) -> dict:
    """Seconds of one warm classify, part by part (the same calls classify makes, timed one by one)."""
    from hatelens.backends.batch_plan import batch_ends

    parts = {}
    started = time.perf_counter()
    ids, _ = classifier.encode_fitted(texts)
    parts["render + tokenize"] = time.perf_counter() - started
    started = time.perf_counter()
    classifier._prepare_prefix(ids)
    parts["shared opening check"] = time.perf_counter() - started
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    widths = classifier._computed_widths([ids[i] for i in order])
    batches, start = [], 0
    for end in batch_ends(widths, 0, max_rows=classifier.batch_size, max_tokens=classifier.max_batch_tokens,
                          cost_share=classifier.batch_cost_share):
        synchronize()
        began = time.perf_counter()
        classifier.score_ids([ids[i] for i in order[start:end]])
        batches.append({"rows": end - start, "width": max(widths[start:end]), "s": round(time.perf_counter() - began, 4),
                        "padded_tokens": (end - start) * max(widths[start:end])})
        start = end
    parts["batches"] = sum(batch["s"] for batch in batches)
    return {"parts_s": {key: round(value, 4) for key, value in parts.items()}, "batches": batches,
            "computed_tokens": sum(widths), "prefix_tokens": len(classifier._prefix[0]) if classifier._prefix else 0}


def profile(classifier, texts, out: Path) -> dict:
    """CUDA kernels of one warm classify: the top ones by GPU time, and how busy the GPU was."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    synchronize()
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with torch_profile(activities=activities) as prof:
        started = time.perf_counter()
        classifier.classify(texts)
        synchronize()
        wall = time.perf_counter() - started
    events = [event for event in prof.key_averages() if event.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(event.self_device_time_total for event in events) / 1e6
    top = sorted(events, key=lambda event: event.self_device_time_total, reverse=True)[:25]
    (out / "eval_profile.txt").write_text(prof.key_averages().table(
        sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=40))
    return {"wall_s": round(wall, 3), "kernel_s": round(total, 3), "gpu_busy": round(total / wall, 3),
            "top": [{"kernel": event.key[:90], "calls": event.count, "s": round(event.self_device_time_total / 1e6, 4)}
                    for event in top]}


def markdown(data: dict) -> str:
    lines = ["# gpt-oss-20b variants, side by side (benchmarks/gpu_variants.py)", "",
             f"environment: {json.dumps(data.get('environment', {}))}", "",
             f"command: `{data.get('command', '')}` (through `bash benchmarks/gpu_session.sh variants`, which "
             "builds the random gpt-oss-20b checkpoint first)", ""]
    training = data.get("training")
    if training:
        lines += ["## Training: `hatelens train --config configs/lora/gpt_oss_20b.yaml epochs=1`, every row", "",
                  "| variant | steady samples/s | peak GB (GiB) | first step s | wall s |", "|---|---:|---:|---:|---:|"]
        for name, row in training.items():
            lines.append(f"| {name} | {row.get('steady_samples_per_s', row.get('skipped', ''))} | "
                         f"{row.get('peak_memory_gb', '')} ({row.get('peak_memory_gib', '')}) | "
                         f"{row.get('first_step_s', '')} | {row.get('wall_s', '')} |")
    evaluation = data.get("evaluation")
    if evaluation:
        lines += ["", f"## Evaluation: `HFClassifier.classify` of the {evaluation['texts']} test texts", "",
                  "| batch shape | first call s | warm calls s | batches |", "|---|---:|---|---:|"]
        for name, row in evaluation.get("shapes", {}).items():
            lines.append(f"| {name} | {row['first_s']} | {row['warm_s']} | {row['batches']} |")
        for key, value in evaluation.items():
            if key.startswith("breakdown"):
                padded = sum(batch["padded_tokens"] for batch in value["batches"])
                lines += ["", f"warm call, part by part ({key}): {json.dumps(value['parts_s'])}, "
                              f"{len(value['batches'])} batches, {value['computed_tokens']} computed tokens "
                              f"({padded} with pads)"]
        kernels = evaluation.get("kernels")
        if kernels:
            lines += ["", f"profiled warm call: wall {kernels['wall_s']} s, kernels {kernels['kernel_s']} s "
                          f"(GPU busy {kernels['gpu_busy']:.0%})", "", "| kernel | calls | s |", "|---|---:|---:|"]
            lines += [f"| `{row['kernel']}` | {row['calls']} | {row['s']} |" for row in kernels["top"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/hatelens_gpu_variants")
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--only", choices=("train", "eval"), action="append")
    parser.add_argument("--extra", action="append", default=[], help="key=value for every training (CPU smoke)")
    args = parser.parse_args(argv)
    args.deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"environment": bench.environment(), "command": " ".join(["python", *sys.argv])}
    parts = args.only or ["train", "eval"]
    if "eval" in parts:  # first: minutes of training must not starve the short profile
        eval_variants(args, data, out)
        gc.collect()
        torch.cuda.empty_cache()  # the training processes need the card
    if "train" in parts:
        train_variants(args, data, out)
    save(out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
