"""Two recipes compared seed by seed, from `hatelens sweep` tables and benchmarks/sweep_suite.sh's suite scores:
each arm's validation F1 and ROC-AUC, per-group FPR/FNR means, the suite's non-hate accuracy and hate recall, and
a Wilcoxon signed-rank test of the paired differences. Cells pair by name: "<arm> seed <n>".

    D=benchmarks/results/quality/gpu_offensive_2026-12-03
    python benchmarks/paired_seeds.py compact offensive --sweeps $D/sweep.json $D/sweep_seeds6_8.json \
        --suites $D/suite_cells.json $D/suite_cells_seeds6_8.json
"""

import argparse
import json
import statistics

from scipy.stats import wilcoxon
from sweep_suite import share

GROUPS = ("lgbtq", "mexican", "middle_east")


def arm_rows(rows: list[dict], arm: str) -> dict[int, dict]:
    """{seed: sweep row} of the cells named "<arm> seed <n>"."""
    return {int(row["name"].rsplit(" ", 1)[1]): row for row in rows if row["name"].startswith(f"{arm} seed ")}


def describe(arm: str, rows: dict[int, dict], suites: dict) -> dict[str, list[float]]:
    figures = {"validation F1": [rows[seed]["f1"] for seed in sorted(rows)],
               "validation ROC-AUC": [rows[seed]["roc_auc"] for seed in sorted(rows)],
               "suite non-hate accuracy": [share(suites[rows[seed]["name"]]["per_functionality"], "normal")
                                           for seed in sorted(rows)],
               "suite hate recall": [share(suites[rows[seed]["name"]]["per_functionality"], "hate")
                                     for seed in sorted(rows)]}
    print(f"## {arm} (seeds {', '.join(map(str, sorted(rows)))})")
    for name, values in figures.items():
        print(f"- {name}: {' / '.join(f'{value:.3f}' for value in values)}; mean {statistics.mean(values):.3f}"
              f" (sd {statistics.stdev(values):.3f})")
    for rate in ("fpr", "fnr"):
        means = [statistics.mean(row["per_group"][group][rate] for row in rows.values()) for group in GROUPS]
        print(f"- mean {rate.upper()} {' / '.join(GROUPS)}: {' / '.join(f'{mean:.3f}' for mean in means)}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--sweeps", nargs="+", required=True, help="sweep.json files")
    parser.add_argument("--suites", nargs="+", required=True, help="suite_cells.json files")
    args = parser.parse_args()
    rows = [row for path in args.sweeps for row in json.load(open(path))["rows"]]
    suites = {name: cell for path in args.suites for name, cell in json.load(open(path)).items()}
    first, second = arm_rows(rows, args.first), arm_rows(rows, args.second)
    seeds = sorted(set(first) & set(second))
    first, second = {seed: first[seed] for seed in seeds}, {seed: second[seed] for seed in seeds}
    a, b = describe(args.first, first, suites), describe(args.second, second, suites)
    print(f"## {args.second} minus {args.first}, seed by seed")
    for name in a:
        differences = [y - x for x, y in zip(a[name], b[name])]
        print(f"- {name}: {' / '.join(f'{d:+.3f}' for d in differences)}; mean {statistics.mean(differences):+.3f},"
              f" higher in {sum(d > 0 for d in differences)} of {len(seeds)}, Wilcoxon signed-rank"
              f" p = {wilcoxon(differences).pvalue:.3f}")


if __name__ == "__main__":
    main()
