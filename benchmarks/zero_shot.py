"""Zero-shot table: every embedded model x every shipped template, score mode, full test split.

    python benchmarks/zero_shot.py [--models smollm2-135m gemma3-270m] [--templates baseline policy_persona]

Each cell is an ordinary `hatelens baseline` run folder under runs/zero_shot/ (resumable: rerun the
command after an interruption). Writes benchmarks/results/zero_shot.md with the run folders it read.
"""

import argparse
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from hatelens import runs
from hatelens.config import EvalConfig, ModelConfig
from hatelens.evaluation.evaluate import evaluate

GROUPS = ("lgbtq", "mexican", "middle_east")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--templates", nargs="+", default=["baseline", "policy_persona"])
    parser.add_argument("--data", default="data/unified/unified_test.json")
    parser.add_argument("--output-dir", default="runs/zero_shot")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only-finished", action="store_true",
                        help="tabulate the cells already measured; list the others as not run")
    args = parser.parse_args()

    rows, missing = [], []
    for model in args.models:
        for template in args.templates:
            run_dir = Path(args.output_dir) / f"{model}_{template}"  # fixed: a finished cell is read back
            if args.only_finished and not (run_dir / "metrics.json").is_file():
                missing.append(f"{model} x {template}")
                continue
            config = EvalConfig(data=args.data, output_dir=args.output_dir, name=f"{model}_{template}",
                                model=ModelConfig(model=model, template=template, batch_size=args.batch_size))
            rows.append((model, template, evaluate(config, run_dir=run_dir)))
    lines = [
        "# Zero-shot baselines on the full test split (score mode, threshold 0.5)",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d} UTC; machine: {platform.machine()}, {os.cpu_count()} cores, CPU",
        f"- data: {args.data}; command: `python benchmarks/zero_shot.py`",
        "",
        "| model | template | F1 | ROC-AUC | " + " | ".join(f"FPR {g} | FNR {g}" for g in GROUPS)
        + " | scoring s | run folder |",
        "|---|---|---:|---:|" + "---:|---:|" * len(GROUPS) + "---:|---|",
    ]
    for model, template, result in rows:
        metrics = result.metrics
        groups = " | ".join(
            f"{_num(metrics['per_group'][g]['fpr'])} | {_num(metrics['per_group'][g]['fnr'])}" for g in GROUPS)
        lines.append(f"| {model} | {template} | {_num(metrics['f1'])} | {_num(metrics['roc_auc'])} | {groups} | "
                     f"{metrics['run']['scoring_wall_s']:.0f} | `{result.run_dir}` |")
    if missing:
        lines += ["", f"Not measured yet (run the command without --only-finished): {', '.join(missing)}."]
    table = "\n".join(lines) + "\n"
    print(table)
    runs.write_atomic(Path(__file__).parent / "results" / "zero_shot.md", table)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
