"""Does a fitted combination of an adapter's answer log-probabilities rank validation better than the template's own
rule? For a template with a third answer (compact_offensive): P(hate) over all three answers (the rule `hatelens`
scores with), P(hate) over hate and normal only, and logistic regressions on the three log-probabilities (alone, with
the group, and per group), each fitted out-of-fold (5 folds x 5 seeds, stratified by label x group).

    python benchmarks/answer_columns.py runs/<run>/02_train/*/adapter [...]   (about 70 s per adapter on 2 cores)

Scores data/validation.jsonl through the hf backend as `hatelens evaluate` does (Output.label_log_probs); metrics
from scikit-learn: ROC-AUC, LGBTQ+ ROC-AUC and F1 at 0.5 of the out-of-fold scores.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from stacking_oof import logit

from hatelens.backends import create_backend
from hatelens.config import ModelConfig
from hatelens.data import load_examples

GROUPS = ["lgbtq", "mexican", "middle_east"]


def answer_scores(adapter: str, texts: list[str], groups: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """P(hate) as the backend scores it, and each answer's log-probability (hate, normal, fine answers...)."""
    classifier = create_backend("hf", ModelConfig(adapter=adapter, batch_size=32))
    outputs = [output for start in range(0, len(texts), 64)
               for output in classifier.classify(texts[start:start + 64], groups[start:start + 64])]
    return np.array([output.score for output in outputs]), np.array([output.label_log_probs for output in outputs])


def out_of_fold(features: np.ndarray, y: np.ndarray, strata: np.ndarray, seed: int) -> np.ndarray:
    scores = np.zeros(len(y))
    for train, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, strata):
        scores[held] = LogisticRegression(max_iter=1000).fit(features[train], y[train]).decision_function(
            features[held])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapters", nargs="+")
    args = parser.parse_args()
    examples = load_examples("data/validation.jsonl").examples
    y = np.array([example.label == "hate" for example in examples], dtype=int)
    groups = np.array([example.group for example in examples])
    lgbtq, strata = groups == "lgbtq", y * 3 + np.searchsorted(GROUPS, groups)
    onehot = np.stack([groups == group for group in GROUPS], axis=1).astype(float)
    print("| adapter | scores | ROC-AUC | LGBTQ+ ROC-AUC | F1 at 0.5 |\n|---|---|---:|---:|---:|")
    for adapter in args.adapters:
        scores, log_probs = answer_scores(adapter, [example.text for example in examples], list(groups))
        rules = {"P(hate) over the three answers (the template's rule)": logit(scores),
                 "P(hate) over hate and normal only": log_probs[:, 0] - log_probs[:, 1]}
        for name, scores in rules.items():
            print(f"| {adapter} | {name} | {roc_auc_score(y, scores):.3f} | {roc_auc_score(y[lgbtq], scores[lgbtq]):.3f}"
                  f" | {f1_score(y, scores >= 0):.3f} |")
        fitted = {"fitted on the three log-probabilities": log_probs,
                  "fitted on them and the group": np.hstack([log_probs, onehot]),
                  "fitted per group": np.hstack([log_probs * onehot[:, [i]] for i in range(3)] + [onehot])}
        for name, features in fitted.items():
            runs = [out_of_fold(features, y, strata, seed) for seed in range(5)]
            print(f"| {adapter} | {name} (out-of-fold) | {np.mean([roc_auc_score(y, s) for s in runs]):.3f} | "
                  f"{np.mean([roc_auc_score(y[lgbtq], s[lgbtq]) for s in runs]):.3f} | "
                  f"{np.mean([f1_score(y, s >= 0) for s in runs]):.3f} |")


if __name__ == "__main__":
    main()
