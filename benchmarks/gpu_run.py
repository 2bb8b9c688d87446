"""gpt-oss on one GPU, measured on the product's own commands and code paths (issue 11).

    PYTHONPATH=src python benchmarks/gpu_run.py --model /tmp/gpt-oss-20b-random --out $OUT
    ... --quick          # a smoke run: small samples, one epoch, 200 test rows, no fp32 check

Measures (a cut-off run keeps what it measured: OUT/gpu_run.json is rewritten after each; run in the
order 2, 3, 1 so that the longest part comes last and gets the time left of --budget-s):
1. `hatelens run --config configs/run/gpt_oss_20b.yaml model=<folder>`: wall time per pipeline step,
   training speed and peak memory from its training_summary.json, base vs fine-tuned test evaluation;
2. `hatelens evaluate` of the 1,009 test texts in fresh processes (FRESH_PROCESSES): compilation, rendering
   and tokenizing, the shared opening, first batch, the rest, writing;
3. in this process, `evaluate()` with the model loaded once: first call and warm call (baseline and
   policy_persona), the seed's method (generate, batch 1) and the utilisation over computed tokens only
   (the shared opening counts once: prefix reuse never computes it again);
4. float32 agreement of the fast paths (prefix reuse, fused sinks, experts skipping pads, fused experts, compiled
   gate) with the plain eager path.
Writes OUT/gpu_run.json and OUT/gpu_run.md.
"""

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gpu_gpt_oss as bench  # noqa: E402

RUN_CONFIG = "configs/run/gpt_oss_20b.yaml"
# fresh `hatelens evaluate` processes, in this order: as shipped (the first pays for whatever the machine has not
# read from its disk yet; the fused experts' Triton kernels come from Triton's disk cache where an earlier
# process compiled them), as shipped with an empty Triton cache (a machine's first process: the kernels compiled),
# transformers' experts and norms (HATELENS_TRITON_KERNELS=0), as shipped again
FRESH_PROCESSES = [("fresh_process_eval", {}), ("fresh_process_eval_empty_triton_cache", {"TRITON_CACHE_DIR": "{work}/triton"}),
                   ("fresh_process_eval_triton_off", {"HATELENS_TRITON_KERNELS": "0"}), ("fresh_process_eval_second", {})]
TEST = "data/unified/unified_test.json"


class Results:
    def __init__(self, out: Path):
        self.out, self.data, self.started = out, {"environment": bench.environment()}, time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def add(self, key: str, value) -> None:
        self.data[key] = value
        print(f"[{self.elapsed():6.1f}s] {key}: {json.dumps(value, default=str)[:1500]}", flush=True)
        (self.out / "gpu_run.json").write_text(json.dumps(self.data, indent=1, default=str))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def stream(command: list[str], log_path: Path, timeout_s: float, env: dict | None = None) -> dict:
    """Run a command, echo and keep its output with seconds since start; note when each pipeline step starts.
    env: variables added to this process's environment."""
    started = time.perf_counter()
    steps = []
    with open(log_path, "w") as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, bufsize=1, env={**os.environ, **(env or {})}) as process:
        try:
            for line in process.stdout:
                now = time.perf_counter() - started
                log.write(f"{now:7.1f} {line}")
                print(f"  | {now:6.1f}s {line.rstrip()[:220]}", flush=True)
                if "hatelens.pipeline: step " in line:
                    steps.append({"step": line.split("hatelens.pipeline: step ", 1)[1].split(":")[0], "start_s": now})
                if now > timeout_s:
                    process.kill()
                    break
        finally:
            process.wait()
    wall_s = time.perf_counter() - started
    for step, following in zip(steps, steps[1:] + [{"start_s": wall_s}]):
        step["wall_s"] = round(following["start_s"] - step["start_s"], 1)
    return {"command": " ".join(command), "returncode": process.returncode, "wall_s": round(wall_s, 1), "steps": steps}


def pipeline_run(args, results: Results) -> None:
    root = Path(args.work) / "runs"
    command = [sys.executable, "-m", "hatelens", "run", "--config", RUN_CONFIG, "--quiet", f"model={args.model}",
               f"output_dir={root}", "name=gpu",
               "reference=false"]  # the MiniLM reference's model package is not on the GPU machine (nothing to fetch)
    if args.quick:  # (not `--quick`: its recipe trains the embedded model on a CPU)
        command += ["validation_samples=60", "test_samples=120", "suite_samples=60", "n_bootstrap=200",
                    "train_overrides=[max_train_samples=256, max_val_samples=64, epochs=1]"]
    run = stream(command, Path(args.out) / "hatelens_run.log", max(60.0, args.budget_s - results.elapsed()))
    folders = sorted(root.glob("*gpu*"))
    if folders:
        folder = folders[-1]
        summaries = sorted(folder.glob("02_train/*/training_summary.json"))
        if summaries:
            summary = json.loads(summaries[-1].read_text())
            run["training"] = {key: summary.get(key) for key in (
                "wall_s", "train_runtime_s", "train_samples_per_s", "n_train", "epochs_done", "steps",
                "early_stopped", "out_of_memory_backoffs", "speed", "batches")}
        for step in ("04_baseline_test", "05_finetuned_test"):
            metrics = folder / step / "metrics.json"
            if metrics.is_file():
                info = json.loads(metrics.read_text())["run"]
                run[step] = {"scoring_wall_s": info["scoring_wall_s"], "timing": info.get("timing")}
    results.add("hatelens_run", run)


def fresh_process_eval(args, results: Results) -> None:
    """`hatelens evaluate` in new processes, one after the other (FRESH_PROCESSES)."""
    for key, env in FRESH_PROCESSES:
        env = {name: value.format(work=args.work) for name, value in env.items()}
        out_dir = Path(args.work) / f"cold_{key}"
        command = [sys.executable, "-m", "hatelens", "evaluate", "--model", args.model, "--template", "baseline",
                   "--data", TEST, "--output-dir", str(out_dir), "--quiet", "--batch-size", "256",
                   "model.max_batch_tokens=32768"]
        if args.rows:
            command += ["--max-samples", str(args.rows)]
        run = stream(command, Path(args.out) / f"{key}.log", 300, env=env)
        run["env"] = env
        metrics = sorted(out_dir.glob("*/metrics.json"))
        if metrics:
            info = json.loads(metrics[-1].read_text())["run"]
            run["scoring_wall_s"], run["timing"], run["write_s"] = info["scoring_wall_s"], info.get("timing"), info.get("write_s")
            compile_s = (info.get("timing") or {}).get("compile_s") or 0.0
            run["fresh_process_eval_s"] = round(info["scoring_wall_s"] + compile_s, 2)  # compilation included
            # and the warm-up the model load ends with (HFClassifier.warm_up: the process's first forward pass)
            run["with_warmup_s"] = round(run["fresh_process_eval_s"] + (info.get("timing") or {}).get("warmup_s", 0), 2)
        results.add(key, run)


def first_and_warm(args, model, tokenizer, template_name: str, label: str, *, rows: int = 256, tokens: int = 32768):
    """`evaluate()` of the test texts twice with one new classifier (by default the shipped 20b evaluation shape):
    ([{"scoring_wall_s", "peak_gib"} of the first call, of the warm one], the classifier)."""
    from hatelens.backends import prompts
    from hatelens.backends.hf import HFClassifier
    from hatelens.config import EvalConfig, ModelConfig
    from hatelens.evaluation.evaluate import evaluate

    classifier = HFClassifier(model, tokenizer, prompts.load_template(template_name), batch_size=rows,
                              max_batch_tokens=tokens)
    calls = []
    for attempt in ("first", "warm"):
        config = EvalConfig(data=TEST, max_samples=args.rows, n_bootstrap=10,  # the shipped 20b evaluation shape
                            model=ModelConfig(model=args.model, template=template_name, batch_size=rows,
                                              max_batch_tokens=tokens))
        bench.reset_peak()
        result = evaluate(config, classifier=classifier, progress=False,
                          run_dir=Path(args.work) / f"in_process_{label}_{attempt}")
        calls.append({"scoring_wall_s": result.metrics["run"]["scoring_wall_s"], "peak_gib": round(bench.peak_gib(), 1)})
    return calls, classifier


def in_process(args, results: Results) -> None:
    from hatelens.backends import prompts
    from hatelens.backends.fast_paths import restore_expert_gate
    from hatelens.backends.hf import load_for_inference
    from hatelens.config import ModelConfig
    from hatelens.data import load_examples

    report: dict = {}
    model_config = ModelConfig(model=args.model, batch_size=256, max_batch_tokens=32768)
    started = time.perf_counter()
    model, tokenizer, _ = load_for_inference(model_config, report=report)
    results.add("load", {"wall_s": round(time.perf_counter() - started, 1), **report,
                         "peak_gib": round(bench.peak_gib(), 1)})
    test = load_examples(TEST).examples[:args.rows or None]
    rate = bench.matmul_tflops() if torch.cuda.is_available() else None
    active = bench.active_parameters(model.config)
    timings = {}
    for template_name in ("baseline", "policy_persona"):
        calls, classifier = first_and_warm(args, model, tokenizer, template_name, template_name)
        timings.update({f"{template_name} {attempt}": call for attempt, call in zip(("first", "warm"), calls)})
        ids = classifier.encode_many([example.text for example in test])
        prefix = len(classifier._prefix[0]) if classifier._prefix else 0
        computed = sum(len(row) - prefix for row in ids) + prefix
        warm = timings[f"{template_name} warm"]
        warm.update(prompt_tokens=sum(map(len, ids)), computed_tokens=computed, prefix_tokens=prefix)
        if rate:  # useful work over computed tokens only, against the card's measured bf16 matmul rate
            warm["utilisation"] = round(2 * active * computed / (warm["scoring_wall_s"] * rate * 1e12), 3)
    calls, _ = first_and_warm(args, model, tokenizer, "baseline", "wide", rows=512, tokens=65536)
    timings.update({f"baseline {attempt}, 512 rows / 65,536 tokens": call
                    for attempt, call in zip(("first", "warm"), calls)})
    timings.update(time_unfused(args, model, tokenizer))
    timings["baseline warm, compiled gate"] = time_compiled_gate(args, model, tokenizer)
    timings["policy_over_baseline"] = round(timings["policy_persona warm"]["scoring_wall_s"]
                                            / timings["baseline warm"]["scoring_wall_s"], 2)
    timings["bf16_matmul_tflops"] = rate and round(rate)
    seed = bench.time_seed_method(model, tokenizer, prompts.load_template("baseline"), test[:args.seed_rows])
    timings["seed_method"] = seed
    timings["x_seed"] = round(len(test) / timings["baseline warm"]["scoring_wall_s"] / seed["samples_per_s"], 1)
    results.add("in_process_eval", timings)
    float32_gib = sum(parameter.numel() for parameter in model.parameters()) * 4 / 2**30
    card_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None
    if args.fp32_rows and card_gib and float32_gib > 0.9 * card_gib:  # an 80 GB card cannot hold 20b in float32
        results.add("fp32_check", {"skipped": f"float32 weights take {float32_gib:.0f} GiB, the card has {card_gib:.0f}"})
    elif args.fp32_rows and results.elapsed() < args.budget_s / 3:  # leave `hatelens run` its time
        restore_expert_gate(model)  # the check compares paths; the compiled gate is checked on its own below
        templates = {"baseline": prompts.load_template("baseline"), "policy": prompts.load_template("policy_persona")}
        results.add("fp32_check", bench.check_fp32(model, tokenizer, templates, test[:args.fp32_rows]))
        results.add("fp32_compiled_gate", check_compiled_gate(model, tokenizer, templates["baseline"],
                                                              test[:args.fp32_rows]))


def time_unfused(args, model, tokenizer) -> dict:
    """The baseline first and warm calls again with transformers' experts and norms
    (the fused Triton kernels off, as HATELENS_TRITON_KERNELS=0 does)."""
    from hatelens.backends.fused_kernels import unfuse, use_fused_kernels

    unfuse(model)
    try:
        calls, _ = first_and_warm(args, model, tokenizer, "baseline", "unfused")
    finally:
        use_fused_kernels(model)
    return {f"baseline {attempt}, Triton kernels off": call for attempt, call in zip(("first", "warm"), calls)}


def time_compiled_gate(args, model, tokenizer) -> dict:
    """The baseline warm again with the experts unfused and their gate compiled (off by default: see ModelConfig)."""
    from hatelens.backends.fast_paths import compile_expert_gate, restore_expert_gate, warm_up_expert_gate
    from hatelens.backends.fused_kernels import unfuse, use_fused_kernels

    unfuse(model)  # the fused kernels apply the gate themselves
    if not compile_expert_gate(model):
        use_fused_kernels(model)
        return {"skipped": "no gate to compile"}
    compile_s = warm_up_expert_gate(model, backward=False)
    (first, warm), _ = first_and_warm(args, model, tokenizer, "baseline", "compiled")
    restore_expert_gate(model)
    use_fused_kernels(model)
    return {"compile_s": round(compile_s, 2), "first_s": first["scoring_wall_s"], "scoring_wall_s": warm["scoring_wall_s"]}


def check_compiled_gate(model, tokenizer, template, examples) -> dict:
    """Plain eager path in float32 with the eager gate, then with the compiled gate: max |dP|."""
    from hatelens.backends.fast_paths import GATE_COMPILATIONS, compile_expert_gate, restore_expert_gate
    from hatelens.backends.fused_kernels import unfuse, use_fused_kernels
    from hatelens.backends.hf import HFClassifier

    texts = [example.text for example in examples]
    model.float()
    unfuse(model)
    try:
        eager = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=64, reuse_prefix=False).classify(texts)]
        compile_expert_gate(model)
        compiled = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=64,
                                                  reuse_prefix=False).classify(texts)]
    finally:
        restore_expert_gate(model)
        model.to(torch.bfloat16)
        use_fused_kernels(model)
    gaps = sorted(abs(a - b) for a, b in zip(eager, compiled))
    return {"rows": len(texts), "max_abs_dp": gaps[-1], "median_abs_dp": gaps[len(gaps) // 2],
            "gate_compilations_in_process": GATE_COMPILATIONS["count"]}


def write_markdown(data: dict, path: Path) -> None:
    lines = ["# gpu_run", "", f"environment: `{json.dumps(data.get('environment'))}`", ""]
    run = data.get("hatelens_run")
    if run:
        lines += [f"`{run['command']}`: **{run['wall_s']} s** (exit {run['returncode']})", "",
                  "| step | wall s |", "|---|---|"] + [f"| {s['step']} | {s.get('wall_s')} |" for s in run["steps"]]
        training = run.get("training") or {}
        speed = training.get("speed") or {}
        lines += ["", "| training | value |", "|---|---|"] + [
            f"| {key} | {value} |" for key, value in {**{k: training.get(k) for k in (
                "train_samples_per_s", "wall_s", "steps", "epochs_done", "early_stopped")}, **speed}.items()]
        base, tuned = run.get("04_baseline_test"), run.get("05_finetuned_test")
        if base and tuned:
            lines += ["", f"test evaluation: base {base['scoring_wall_s']} s, fine-tuned {tuned['scoring_wall_s']} s "
                          f"(**{tuned['scoring_wall_s'] / base['scoring_wall_s']:.2f}x**)"]
    for key, _ in FRESH_PROCESSES:
        cold = data.get(key)
        if cold:
            timing = cold.get("timing") or {}
            parts = {name: timing.get(name) for name in ("encode_s", "prefix_s", "first_batch_s", "later_batches_s")}
            lines += ["", f"{key} `hatelens evaluate` {cold.get('env') or ''}: scoring {cold.get('scoring_wall_s')} s"
                          f" + compilation {timing.get('compile_s')} s = **{cold.get('fresh_process_eval_s')} s**, "
                          f"{cold.get('with_warmup_s')} s with the warm-up at load ({timing.get('warmup_s')} s) "
                          f"({json.dumps(parts)}, writing {cold.get('write_s')} s); process wall {cold['wall_s']} s "
                          "(model load included)"]
    warm = data.get("in_process_eval")
    if warm:
        lines += ["", "| in-process evaluate() | scoring s | peak GiB | utilisation (computed tokens) |",
                  "|---|---|---|---|"]
        lines += [f"| {key} | {value['scoring_wall_s']} | {value.get('peak_gib', '')} | {value.get('utilisation', '')} |"
                  for key, value in warm.items() if isinstance(value, dict) and "scoring_wall_s" in value]
        lines += ["", f"policy_persona / baseline (warm): **{warm['policy_over_baseline']}x**; seed method "
                      f"{warm['seed_method']['samples_per_s']:.2f} samples/s: **{warm['x_seed']}x**"]
    for entry in data.get("fp32_check") or []:
        lines.append(f"- fp32 {entry['template']} {entry['variant']}: max |dP| {entry['max_abs_dp']:.1e}, median "
                     f"{entry['median_abs_dp']:.1e}, same side {entry['same_side_of_0.5']:.3f}")
    gate = data.get("fp32_compiled_gate")
    if gate:
        lines.append(f"- fp32 compiled gate vs eager gate: max |dP| {gate['max_abs_dp']:.1e}")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the model folder (build_random_checkpoint.py)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/hatelens_gpu_run", help="run folders (large; not copied out)")
    parser.add_argument("--quick", action="store_true", help="small samples, one epoch, 200 rows, no fp32 check")
    parser.add_argument("--only", choices=("run", "cold", "warm"), action="append", help="parts to run (default all)")
    parser.add_argument("--budget-s", type=float, default=420,
                        help="start nothing after this many seconds; `hatelens run` is stopped at it")
    args = parser.parse_args(argv)
    args.rows = 200 if args.quick else None
    args.seed_rows, args.fp32_rows = (10, 0) if args.quick else (50, 128)
    shutil.rmtree(args.work, ignore_errors=True)  # run folders of an earlier attempt would be reused as finished
    results = Results(Path(args.out))
    parts = args.only or ["run", "cold", "warm"]
    # shortest first, so a cut-off session still has every figure but the longest
    for name, part in (("cold", fresh_process_eval), ("warm", in_process), ("run", pipeline_run)):
        if name not in parts:
            continue
        if results.elapsed() > args.budget_s:
            results.add(f"skipped_{name}", f"over the {args.budget_s} s budget")
            continue
        try:
            part(args, results)
        except Exception as error:  # a benchmark keeps going: the other parts still measure
            results.add(f"error_{name}", f"{type(error).__name__}: {error}")
        gc.collect()  # the in-process model must leave the GPU before `hatelens run` loads its own
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write_markdown(results.data, Path(args.out) / "gpu_run.md")
    print((Path(args.out) / "gpu_run.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
