"""What averaging several training seeds would buy: the validation predictions of a sweep's cells named
"<arm> seed <n>", combined k at a time (the mean of their log-odds), for k = 1 .. every seed.

    tar xzf cells.tgz -C /tmp/ens        # gpu_quality_sweep.sh's tarball of the cells (their validation predictions)
    python benchmarks/seed_ensemble.py /tmp/ens/runs/sweeps/cells offensive > ensemble.md

Per k, over every subset of k seeds (at most 200 drawn at random where there are more): validation F1 at threshold
0.5, ROC-AUC, LGBTQ+ ROC-AUC, the best F1 any single threshold reaches (read on validation itself: a ceiling, not a
figure a run could report; calibrate.best_f1_threshold) and the total excess over the sweeps' group budgets at 0.5
(sweep.table.excess under SweepRule: FPR <= 0.20, FNR <= 0.25). Metrics from scikit-learn and hatelens' own
functions; a row without a score in any cell stops the script.

--with PREDICTIONS: another model's `hatelens evaluate` predictions of the same rows (e.g. the MiniLM reference,
`hatelens evaluate --backend reference --data data/validation.jsonl`), fused with each subset at equal weight: the
mean of (the seeds' mean log-odds, its log-odds).
"""

import argparse
import glob
import itertools
import json
import os
import random
import statistics

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score
from stacking_oof import load, logit

from hatelens.evaluation.calibrate import best_f1_threshold
from hatelens.evaluation.metrics import binary_rates
from hatelens.sweep import SweepRule
from hatelens.sweep.table import excess

RULE = SweepRule()  # the sweeps' budgets: every group's FPR <= 0.20 and FNR <= 0.25


def read_other(path: str, rows: list[dict]) -> np.ndarray:
    """Log-odds of the rows from another model's predictions file (every row must be there, with a score)."""
    scored = load(path)
    missing = [row["id"] for row in rows if scored.get(row["id"], {}).get("score") is None]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} validation row(s) without a score, e.g. {missing[0]}")
    return logit(np.array([scored[row["id"]]["score"] for row in rows], dtype=float))


def read_cells(cells_dir: str, arm: str) -> tuple[dict[int, np.ndarray], list[dict]]:
    """{seed: log-odds per validation row} and the rows (id, label, group) in one order."""
    log_odds, rows = {}, None
    for cell_file in glob.glob(os.path.join(cells_dir, "*", "cell.json")):
        name = json.load(open(cell_file))["name"]
        if not name.startswith(f"{arm} seed "):
            continue
        found = glob.glob(os.path.join(os.path.dirname(cell_file), "validation", "predictions.jsonl"))
        if not found:
            continue
        predictions = sorted((json.loads(line) for line in open(found[0])), key=lambda row: row["id"])
        if rows is None:
            rows = [{"id": row["id"], "label": row["label"], "group": row["group"]} for row in predictions]
        if [row["id"] for row in predictions] != [row["id"] for row in rows]:
            raise SystemExit(f"{found[0]}: not the same validation rows as the other cells")
        unscored = sum(row.get("score") is None for row in predictions)
        if unscored:
            raise SystemExit(f"{found[0]}: {unscored} row(s) without a score")
        log_odds[int(name.rsplit(" ", 1)[1])] = logit(np.array([row["score"] for row in predictions], dtype=float))
    if not log_odds:
        raise SystemExit(f"no cell named '{arm} seed N' with validation predictions under {cells_dir}")
    return log_odds, rows


def figures(y: np.ndarray, groups: np.ndarray, log_odds: np.ndarray) -> dict[str, float]:
    predicted = (log_odds >= 0).astype(int)
    per_group = {group: binary_rates(y[groups == group], predicted[groups == group]) for group in RULE.groups}
    lgbtq = groups == "lgbtq"
    return {"F1 at 0.5": f1_score(y, predicted), "ROC-AUC": roc_auc_score(y, log_odds),
            "LGBTQ+ ROC-AUC": roc_auc_score(y[lgbtq], log_odds[lgbtq]),
            "best-threshold F1": best_f1_threshold(y, log_odds)[1],
            "budget excess": excess({"per_group": per_group}, RULE)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells_dir")
    parser.add_argument("arm")
    parser.add_argument("--max-subsets", type=int, default=200)
    parser.add_argument("--with", dest="other", help="another model's predictions of the rows, fused at equal weight")
    args = parser.parse_args()
    log_odds, rows = read_cells(args.cells_dir, args.arm)
    other = read_other(args.other, rows) if args.other else None
    y = np.array([row["label"] == "hate" for row in rows], dtype=int)
    groups = np.array([row["group"] for row in rows])
    seeds = sorted(log_odds)
    fused = f", each fused with {args.other}" if args.other else ""
    print(f"# Seed ensembles of `{args.arm}`{fused} (seeds {', '.join(map(str, seeds))}; {len(rows)} validation rows)\n")
    print("Mean over subsets of k seeds (min-max in brackets); each subset scored by the mean of its seeds' log-odds.\n")
    names = list(figures(y, groups, log_odds[seeds[0]]))
    print("| k | subsets | " + " | ".join(names) + " |")
    print("|---:|---:|" + "---|" * len(names))
    rng = random.Random(0)
    for k in range(1, len(seeds) + 1):
        subsets = list(itertools.combinations(seeds, k))
        if len(subsets) > args.max_subsets:
            subsets = rng.sample(subsets, args.max_subsets)
        combined = [np.mean([log_odds[seed] for seed in subset], axis=0) for subset in subsets]
        if other is not None:
            combined = [(scores + other) / 2 for scores in combined]
        results = [figures(y, groups, scores) for scores in combined]
        cells = [f"{statistics.mean(r[name] for r in results):.3f} [{min(r[name] for r in results):.3f}-"
                 f"{max(r[name] for r in results):.3f}]" for name in names]
        print(f"| {k} | {len(subsets)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
