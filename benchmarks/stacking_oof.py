"""Score stacking of two models' validation scores, out-of-fold (issue 13, docs/quality.md).

    python benchmarks/stacking_oof.py LLM_VALIDATION/predictions.jsonl ENCODER_VALIDATION/predictions.jsonl

Both files are `hatelens evaluate` predictions of the same rows (validation only: the test split is left to
`make run`). Prints ROC-AUC, F1 at 0.5 and per-group FPR/FNR of each model alone (recalibrated by a one-feature
logistic regression), the mean of the two logits, and a logistic regression on both logits, each fitted on 4/5
of the rows and scored on the fifth (5 folds x 5 seeds, averaged). Metrics from scikit-learn.
"""

import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

GROUPS = ("lgbtq", "mexican", "middle_east")


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as file:
        return {row["id"]: row for row in map(json.loads, file)}


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def out_of_fold(features: np.ndarray, labels: np.ndarray, columns) -> np.ndarray:
    """Out-of-fold P(hate): columns None = the mean of the logits (nothing fitted)."""
    scores = np.zeros(len(labels))
    for seed in range(5):
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels):
            if columns is None:
                scores[test] += 1 / (1 + np.exp(-features[test].mean(axis=1))) / 5
            else:
                model = LogisticRegression().fit(features[train][:, columns], labels[train])
                scores[test] += model.predict_proba(features[test][:, columns])[:, 1] / 5
    return scores


def main(argv: list[str]) -> int:
    first, second = load(argv[0]), load(argv[1])
    ids = sorted(first)
    if set(ids) != set(second):
        print("the two prediction files hold different rows", file=sys.stderr)
        return 2
    labels = np.array([first[i]["label"] == "hate" for i in ids], dtype=int)
    groups = np.array([first[i]["group"] for i in ids])
    features = np.column_stack([logit(np.array([rows[i]["score"] for i in ids])) for rows in (first, second)])
    for name, columns in (("first alone", [0]), ("second alone", [1]), ("mean of logits", None),
                          ("stacked (logistic)", [0, 1])):
        scores = out_of_fold(features, labels, columns)
        predicted = scores >= 0.5
        rates = []
        for group in GROUPS:
            negative, positive = (groups == group) & (labels == 0), (groups == group) & (labels == 1)
            rates.append(f"{group} {predicted[negative].mean():.3f}/{1 - predicted[positive].mean():.3f}")
        print(f"{name:20s} ROC-AUC {roc_auc_score(labels, scores):.3f}  F1 {f1_score(labels, predicted):.3f}  "
              f"FPR/FNR {', '.join(rates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
