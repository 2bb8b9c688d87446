"""Where a training step's time goes: how much of it the GPU is busy, on which kernels, and what the host does.

    PYTHONPATH=src python benchmarks/train_profile.py --model /tmp/m --out $OUT/profile \
        [--variant NAME=key=value,key=value ...] [--warm 6] [--timed 20] [--profiled 3]
    (a variant's env.NAME=value sets an environment variable for that variant, e.g. env.HATELENS_GRAPH_OPENING=0)

Each variant is `hatelens train --config configs/lora/gpt_oss_20b.yaml` (the trainer, its token-budget sampler,
the recipe), run in this process through `hatelens.training.train.train` with a callback that stops it after
warm + timed + profiled steps. The first variant is the recipe as shipped. Per variant:
- the timed window (no profiler): seconds a step, rows and padded tokens a second, the peak memory of its steps;
- the profiled steps (torch.profiler, CPU and CUDA): the GPU's busy time (the union of its kernels' intervals)
  against the timed window's step time, so the share of a step the GPU waits on the host is read without the
  profiler's own overhead; the top kernels; the host's ops by self time; the host's waits on the GPU
  (synchronisations and device-to-host copies).
The variants share seeds and sampler, so the same budget gives the same batches in the same order. A later variant
in the same process ran slower than the same code run first (0.49 against 0.42 s a step, call 23 in
results/train_profile.md): compare code versions in separate processes (one variant each, the other through env.). Writes OUT/train_profile.json and OUT/train_profile.md (rewritten after each variant).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent))
import gpu_gpt_oss as bench  # noqa: E402

RECIPE = "configs/lora/gpt_oss_20b.yaml"
WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "aten::_local_scalar_dense",
         "aten::item", "aten::nonzero", "Memcpy DtoH")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepWindows(TrainerCallback):
    """Times steps [warm, warm + timed) with no profiler, then profiles `profiled` steps and stops the run."""

    def __init__(self, warm: int, timed: int, profiled: int, shapes: list):
        self.warm, self.timed, self.profiled, self.shapes = warm, timed, profiled, shapes
        self.result, self.profiler, self.started = {}, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step
        if step in (self.warm, self.warm + self.timed):
            synchronize()
            self.started, self.first_shape = time.perf_counter(), len(self.shapes)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        if step == self.warm + self.timed:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step  # steps done, this one included
        if step == self.warm + self.timed:
            synchronize()
            self.result["timed"] = self.window(time.perf_counter() - self.started)
        elif step == self.warm + self.timed + self.profiled:
            synchronize()
            wall = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            self.result["profiled"] = {**self.window(wall), **analyse(self.profiler, self.profiled)}
            control.should_training_stop = True

    def window(self, wall: float) -> dict:
        shapes = self.shapes[self.first_shape:]
        rows = sum(r for r, _ in shapes)
        tokens = sum(r * w for r, w in shapes)
        return {"steps": len(shapes), "wall_s": round(wall, 3), "s_per_step": round(wall / max(len(shapes), 1), 4),
                "rows_per_s": round(rows / wall, 1), "padded_tokens_per_s": round(tokens / wall),
                "rows_per_step": round(rows / max(len(shapes), 1), 1),
                "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None}


def busy_seconds(events) -> float:
    """Length of the union of the GPU events' intervals (kernels, copies, memsets)."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in events)
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total / 1e6


def analyse(profiler, steps: int) -> dict:
    from torch.autograd import DeviceType

    events = profiler.events()
    gpu = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels, host = {}, {}
    for e in gpu:
        name = e.name[:90]
        count, seconds = kernels.get(name, (0, 0.0))
        kernels[name] = (count + 1, seconds + (e.time_range.end - e.time_range.start) / 1e6)
    for item in profiler.key_averages():
        if item.device_type == DeviceType.CPU:
            host[item.key[:90]] = (item.count, item.self_cpu_time_total / 1e6)
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:30]
    top_host = sorted(host.items(), key=lambda kv: -kv[1][1])[:30]
    waits = {name: host.get(name, (0, 0.0)) for name in WAITS}
    waits["Memcpy DtoH"] = kernels.get(next((k for k in kernels if "DtoH" in k), ""), (0, 0.0))
    return {"gpu_busy_s_per_step": round(busy_seconds(gpu) / steps, 4),
            "gpu_events_per_step": round(len(gpu) / steps),
            "kernel_s_per_step": round(sum(s for _, s in kernels.values()) / steps, 4),
            "top_kernels": [[name, count // steps, round(s / steps, 4)] for name, (count, s) in top],
            "top_host_ops": [[name, count // steps, round(s / steps, 4)] for name, (count, s) in top_host],
            "host_waits_per_step": {name: [count / steps, round(s / steps, 4)] for name, (count, s) in waits.items()}}


def run_variant(args, overrides: list[str]) -> dict:
    from hatelens.config import TrainConfig, load_config
    from hatelens.training import train as train_module
    from hatelens.training.trainer import AnswerSFTTrainer

    shapes: list = []
    original = AnswerSFTTrainer.training_step

    def training_step(self, model, inputs, num_items_in_batch=None):
        shapes.append(tuple(inputs["input_ids"].shape))
        return original(self, model, inputs, num_items_in_batch)

    environment = dict(o[4:].split("=", 1) for o in overrides if o.startswith("env."))  # env.NAME=value
    overrides = [o for o in overrides if not o.startswith("env.")]
    config = load_config(TrainConfig, RECIPE, [f"model={args.model}", "epochs=1", "eval_on_start=false",
                                               f"output_dir={args.work}/{len(list(Path(args.work).glob('*')))}",
                                               "name=profile", "report_to=none", *args.extra, *overrides])
    windows = StepWindows(args.warm, args.timed, args.profiled, shapes)
    AnswerSFTTrainer.training_step = training_step
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    started = time.perf_counter()
    try:
        train_module.train(config, progress=False, callbacks=(windows,))
    finally:
        AnswerSFTTrainer.training_step = original
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    row = {"overrides": overrides, "process_s": round(time.perf_counter() - started, 1), **windows.result}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def markdown(data: dict) -> str:
    lines = ["# Training steps profiled (`benchmarks/train_profile.py`)", "",
             f"environment: {json.dumps(data['environment'])}", "", f"command: `{data['command']}`", "",
             "| variant | s a step (timed) | rows/s | padded tokens/s | rows a step | peak GB | GPU busy s a step (profiled) | busy share of the timed step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in data["variants"].items():
        timed, profiled = row.get("timed", {}), row.get("profiled", {})
        busy = profiled.get("gpu_busy_s_per_step")
        share = f"{busy / timed['s_per_step']:.0%}" if busy and timed.get("s_per_step") else "-"
        lines.append(f"| {name} | {timed.get('s_per_step', '-')} | {timed.get('rows_per_s', '-')} | "
                     f"{timed.get('padded_tokens_per_s', '-')} | {timed.get('rows_per_step', '-')} | "
                     f"{timed.get('peak_memory_gb', '-')} | {busy or '-'} | {share} |")
    for name, row in data["variants"].items():
        profiled = row.get("profiled")
        if not profiled:
            continue
        lines += ["", f"## {name}: per profiled step", "", f"host waits: {json.dumps(profiled['host_waits_per_step'])}",
                  "", "| kernel | calls | s |", "|---|---:|---:|"]
        lines += [f"| `{k}` | {c} | {s} |" for k, c, s in profiled["top_kernels"]]
        lines += ["", "| host op (self time) | calls | s |", "|---|---:|---:|"]
        lines += [f"| `{k}` | {c} | {s} |" for k, c, s in profiled["top_host_ops"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/hatelens_train_profile")
    parser.add_argument("--warm", type=int, default=6)
    parser.add_argument("--timed", type=int, default=20)
    parser.add_argument("--profiled", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=key=value,key=value: the recipe with these overrides (the shipped recipe runs first)")
    parser.add_argument("--extra", action="append", default=[], help="key=value for every variant (CPU smoke: device=cpu)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    data = {"environment": bench.environment(), "command": " ".join(sys.argv), "variants": {}}
    variants = [("as shipped", [])] + [(v.split("=", 1)[0], v.split("=", 1)[1].split(",")) for v in args.variant]
    for name, overrides in variants:
        try:
            data["variants"][name] = run_variant(args, overrides)
        except Exception as error:  # one variant's failure (e.g. out of memory) leaves the others measured
            data["variants"][name] = {"overrides": overrides, "error": f"{type(error).__name__}: {error}"[:500]}
        (out / "train_profile.json").write_text(json.dumps(data, indent=1))
        (out / "train_profile.md").write_text(markdown(data))
        print(markdown(data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
