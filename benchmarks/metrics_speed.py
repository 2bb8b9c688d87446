"""How long one run's metrics.json takes: bootstrap intervals through the vectorised core (what hatelens runs)
against the same resamples through scikit-learn's metric functions (what it ran before), side by side.

    python benchmarks/metrics_speed.py --output benchmarks/results/metrics_speed.md

Workload: the 1,009 rows of the test split (its real labels and groups), scores drawn from a seeded generator
(the time does not depend on their values), 2% of answers invalid, 1,000 bootstrap resamples: what
`hatelens evaluate` computes after scoring the test split. Each variant runs twice: first and second call apart.
"""

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hatelens.data import load_examples
from hatelens.evaluation import metrics


def sklearn_resample_rates(*names):
    """The per-resample metric as it was: scikit-learn's functions with their input checks."""
    if names == ("fpr", "fnr"):
        return metrics._fpr_fnr
    return metrics.binary_rates


def workload(data: str, seed: int = 0) -> dict:
    examples = load_examples(data).examples
    rng = np.random.default_rng(seed)
    scores = rng.random(len(examples))
    predictions = ["hate" if score >= 0.5 else "normal" for score in scores]
    for index in rng.choice(len(examples), size=len(examples) // 50, replace=False):
        predictions[index] = None
    return {"labels": [example.label for example in examples], "predictions": predictions,
            "scores": scores.tolist(), "groups": [example.group for example in examples]}


def timed(rows: dict, n_bootstrap: int) -> float:
    started = time.perf_counter()
    metrics.compute_metrics(rows["labels"], rows["predictions"], rows["scores"], rows["groups"],
                            n_bootstrap=n_bootstrap, seed=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/unified/unified_test.json")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--output", help="write the table to this Markdown file")
    args = parser.parse_args()
    rows = workload(args.data)
    fast = [timed(rows, args.n_bootstrap) for _ in range(2)]
    current = metrics.resample_rates, metrics.resample_aucs
    metrics.resample_rates, metrics.resample_aucs = sklearn_resample_rates, metrics._aucs
    try:
        slow = [timed(rows, args.n_bootstrap) for _ in range(2)]
    finally:
        metrics.resample_rates, metrics.resample_aucs = current
    lines = [
        "# One run's metrics.json: bootstrap through the vectorised core vs scikit-learn per resample", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, no GPU used, Python {platform.python_version()}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d}",
        "- command: `python benchmarks/metrics_speed.py --output benchmarks/results/metrics_speed.md`",
        f"- workload: {len(rows['labels'])} rows of `{args.data}` (real labels and groups, seeded scores, 2% invalid), "
        f"{args.n_bootstrap} resamples", "",
        "| per-resample metrics | first call s | second call s |", "|---|---:|---:|",
        f"| vectorised core (`resample_rates`, `resample_aucs`: what hatelens runs) | {fast[0]:.2f} | {fast[1]:.2f} |",
        f"| scikit-learn functions (`binary_rates`, `_fpr_fnr`, `_aucs`: before) | {slow[0]:.2f} | {slow[1]:.2f} |",
        "", f"Ratio (second calls): **{slow[1] / fast[1]:.0f}x**.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
