"""Evaluation throughput on this machine: score mode (batch 1 and 16) vs the seed's generate mode.

    python benchmarks/eval_throughput.py --model smollm2-135m --rows 64

One model load, the same stratified sample of test texts for every variant, each variant timed after
a warm-up batch. Prints a table and writes benchmarks/results/eval_throughput_<model>.md.
"""

import argparse
import os
import platform
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hatelens import data, runs
from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier, load_for_inference
from hatelens.config import ModelConfig

RESULTS = Path(__file__).parent / "results"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(classifier: HFClassifier, texts: list[str]) -> dict:
    classifier.classify(texts[: classifier.batch_size])  # warm-up
    started = time.perf_counter()
    outputs = classifier.classify(texts)
    seconds = time.perf_counter() - started
    return {"samples": len(texts), "seconds": seconds, "samples_per_s": len(texts) / seconds,
            "invalid": sum(o.score is None and o.answer is None for o in outputs), "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--template", default="baseline")
    parser.add_argument("--data", default="data/unified/unified_test.json")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--generate-rows", type=int, default=32, help="generate mode is slow: fewer rows")
    args = parser.parse_args()

    texts = [e.text for e in data.stratified_sample(data.load_examples(args.data).examples, args.rows, seed=0)]
    model, tokenizer, version = load_for_inference(ModelConfig(model=args.model))
    template = prompts.load_template(args.template)
    variants = [
        ("score, batch 1", HFClassifier(model, tokenizer, template, batch_size=1), texts),
        ("score, batch 16", HFClassifier(model, tokenizer, template, batch_size=16), texts),
        ("generate 5 tokens, batch 1 (seed's method)",
         HFClassifier(model, tokenizer, template, mode="generate", batch_size=1, max_new_tokens=5),
         texts[: args.generate_rows]),
    ]
    results = [(name, measure(classifier, rows)) for name, classifier, rows in variants]
    slowest = results[-1][1]["samples_per_s"]
    lines = [
        f"# Evaluation throughput: {version}, template `{args.template}`",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only; load average at start "
        f"{os.getloadavg()[0]:.1f} (other work on the machine slows every variant alike)",
        f"- data: {args.rows} rows stratified from {args.data} (generate: the first {args.generate_rows} of them)",
        f"- command: `python benchmarks/eval_throughput.py --model {args.model} --template {args.template} "
        f"--rows {args.rows}`",
        "",
        "| variant | rows | seconds | samples/s | vs seed's method | peak RSS (MiB, process) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result in results:
        lines.append(f"| {name} | {result['samples']} | {result['seconds']:.1f} | {result['samples_per_s']:.2f} | "
                     f"{result['samples_per_s'] / slowest:.1f}x | {result['peak_rss_mib']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    runs.write_atomic(RESULTS / f"eval_throughput_{args.model}.md", table)


if __name__ == "__main__":
    main()
