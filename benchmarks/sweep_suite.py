"""The table of benchmarks/sweep_suite.sh's output: each sweep cell's functional-suite accuracy by functionality.

    python benchmarks/sweep_suite.py benchmarks/results/quality/gpu_sweep_2026-12-02/suite_cells.json
"""

import json
import sys

NON_HATE = ["ident_neutral_nh", "ident_pos_nh", "counter_speech_nh", "quote_denounce_nh", "negation_nh", "reclaimed_nh"]
HATE = ["hate_plain_h", "negated_positive_h", "stereotype_implicit_h"]


def share(per_functionality: dict, names: list[str]) -> float:
    return sum(per_functionality[n]["n_correct"] for n in names) / sum(per_functionality[n]["n"] for n in names)


def main(path: str) -> None:
    cells = json.load(open(path))
    print("| cell | non-hate accuracy | hate recall | suite ROC-AUC | " + " | ".join(NON_HATE) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(NON_HATE))
    for name, cell in sorted(cells.items(), key=lambda item: -share(item[1]["per_functionality"], NON_HATE)):
        found = cell["per_functionality"]
        print(f"| {name} | {share(found, NON_HATE):.3f} | {share(found, HATE):.3f} | {cell['roc_auc']:.3f} | "
              + " | ".join(f"{found[n]['accuracy']:.2f}" for n in NON_HATE) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
