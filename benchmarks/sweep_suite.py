"""The table of benchmarks/sweep_suite.sh's output: each sweep cell's functional-suite accuracy by functionality.

    python benchmarks/sweep_suite.py benchmarks/results/quality/gpu_sweep_2026-12-02/suite_cells.json
"""

import json
import sys


def share(per_functionality: dict, label: str) -> float:
    """Accuracy over every case whose gold label is `label` (non-hate accuracy for normal, recall for hate)."""
    cases = [entry for entry in per_functionality.values() if entry["label"] == label]
    return sum(entry["n_correct"] for entry in cases) / sum(entry["n"] for entry in cases)


def main(path: str) -> None:
    cells = json.load(open(path))
    first = next(iter(cells.values()))["per_functionality"]
    non_hate = sorted(name for name, entry in first.items() if entry["label"] == "normal")
    print("| cell | non-hate accuracy | hate recall | suite ROC-AUC | " + " | ".join(non_hate) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(non_hate))
    for name, cell in sorted(cells.items(), key=lambda item: -share(item[1]["per_functionality"], "normal")):
        found = cell["per_functionality"]
        print(f"| {name} | {share(found, 'normal'):.3f} | {share(found, 'hate'):.3f} | {cell['roc_auc']:.3f} | "
              + " | ".join(f"{found[n]['accuracy']:.2f}" for n in non_hate) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
