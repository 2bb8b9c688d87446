"""Where a scored split's errors come from: each group by source dataset and by the source's finer label.

    python benchmarks/error_sources.py runs/<run>/05_finetuned_test/predictions.jsonl data/unified/unified_test.json

The unified file holds what the predictions leave out (`source_dataset`, `label_multiclass`: HateXplain's
hatespeech / offensive / normal, ToxiGen's toxic_implicit / benign_implicit); rows are matched by text. Prints
a Markdown table (rows, ROC-AUC, mean score, share scored >= 0.5 per finer label) and, as a diagnosis only, the
best F1 any single threshold reaches on these rows and each group's operating point nearest its FPR/FNR budget.
Thresholds tuned on these rows would make their figures meaningless: nothing here chooses anything.
"""

import argparse
import json
from collections import defaultdict

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from hatelens.evaluation.calibrate import best_f1_threshold


def load(predictions: str, unified: str) -> list[dict]:
    by_text = {}
    for row in json.load(open(unified, encoding="utf-8")):
        by_text.setdefault(row["text"], row)
    rows = []
    for line in open(predictions, encoding="utf-8"):
        prediction = json.loads(line)
        source = by_text.get(prediction["text"])
        if source is None or prediction.get("score") is None:
            raise SystemExit(f"{predictions}: row {prediction['id']} is not in {unified} or has no score")
        rows.append({"group": prediction["group"], "hate": prediction["label"] == "hate",
                     "score": prediction["score"], "source": source["source_dataset"],
                     "finer": source["label_multiclass"]})
    return rows


def breakdown(rows: list[dict]) -> list[str]:
    lines = ["| group | source | rows | hate share | ROC-AUC | finer label: rows, mean score, share >= 0.5 |",
             "|---|---|---:|---:|---:|---|"]
    cells = defaultdict(list)
    for row in rows:
        cells[(row["group"], row["source"])].append(row)
    for (group, source), cell in sorted(cells.items()):
        y = np.array([row["hate"] for row in cell])
        scores = np.array([row["score"] for row in cell])
        auc = f"{roc_auc_score(y, scores):.3f}" if 0 < y.mean() < 1 else "-"
        finer = []
        for label in sorted({row["finer"] for row in cell}):
            picked = scores[[row["finer"] == label for row in cell]]
            finer.append(f"{label} {len(picked)}, {picked.mean():.2f}, {(picked >= 0.5).mean():.2f}")
        lines.append(f"| {group} | {source} | {len(cell)} | {y.mean():.2f} | {auc} | {'; '.join(finer)} |")
    return lines


def ceilings(rows: list[dict], max_fpr: float, max_fnr: float) -> list[str]:
    y = np.array([row["hate"] for row in rows])
    scores = np.array([row["score"] for row in rows])
    at, best_f1 = best_f1_threshold(y.astype(int), scores)  # what `hatelens calibrate` would pick on these rows
    lines = [f"best F1 of any single threshold on these rows: {best_f1:.3f} (at {at:.3f}; at 0.5: "
             f"{f1_score(y, scores >= 0.5):.3f})"]
    for group in sorted({row["group"] for row in rows}):
        mask = np.array([row["group"] == group for row in rows])
        fpr, tpr, thresholds = roc_curve(y[mask], scores[mask])
        miss = np.maximum(fpr - max_fpr, (1 - tpr) - max_fnr)
        i = int(np.argmin(miss))
        verdict = "within budget" if miss[i] <= 0 else f"over budget by {miss[i]:.3f} at best"
        lines.append(f"{group}: nearest point FPR {fpr[i]:.3f} / FNR {1 - tpr[i]:.3f} at threshold "
                     f"{min(thresholds[i], 1.0):.3f}: {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions")
    parser.add_argument("unified", help="the unified split file the predictions were scored on")
    parser.add_argument("--max-group-fpr", type=float, default=0.20)
    parser.add_argument("--max-group-fnr", type=float, default=0.25)
    args = parser.parse_args()
    rows = load(args.predictions, args.unified)
    print("\n".join(breakdown(rows) + [""] + ceilings(rows, args.max_group_fpr, args.max_group_fnr)))


if __name__ == "__main__":
    main()
