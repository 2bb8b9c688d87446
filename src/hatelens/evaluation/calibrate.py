"""Decision thresholds from a validation run's scores, with or without a fairness constraint.

Objectives (a prediction is "hate" when score >= threshold: `thresholds.Thresholds.decide`):
- f1:            one global threshold, the one with the best F1 on the validation rows.
- max_group_fpr: per-group thresholds with the best overall F1 such that every group's FPR stays at
                 or under a cap (coordinate ascent over each group's candidate thresholds).
- group_budget:  per-group thresholds with the best overall F1 such that every group's FPR and FNR stay
                 within their budgets; a group for which no threshold meets both gets the threshold that
                 misses them by least, and is named in `budget_unmet` (never a silent trade of one group's
                 errors for F1).
- equalize_fpr:  per-group thresholds that give every group the same FPR. Fairlearn's
                 ThresholdOptimizer (false_positive_rate_parity, balanced accuracy) picks the common
                 FPR; its randomised mix of two thresholds per group is replaced by the single
                 threshold whose FPR is nearest, because a served model must answer the same text
                 the same way every time.
Each result records its F1 cost: the F1 of the best single threshold minus the F1 under the
objective's thresholds (negative when per-group thresholds fit the validation rows better).
Thresholds are never fitted on the test split: a run on the examples (or the file) of a known test split
(splits.json from `hatelens data split`, data/unified/unified_test.json) is refused, whatever its name.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from hatelens.config import DEFAULT_MAX_GROUP_FNR, DEFAULT_MAX_GROUP_FPR
from hatelens.data.labels import to_int
from hatelens.data.split_record import known_test_splits
from hatelens.errors import ConfigError
from hatelens.evaluation.metrics import binary_rates, counts_at_thresholds, rates_from_counts
from hatelens.evaluation.thresholds import Thresholds
from hatelens.runs import FinishedRun, load_finished_run

logger = logging.getLogger(__name__)

OBJECTIVES = ("f1", "max_group_fpr", "group_budget", "equalize_fpr")
MAX_PASSES = 50  # coordinate ascent stops earlier as soon as a pass changes nothing


@dataclass
class Calibration:
    path: Path  # the thresholds.json written
    thresholds: Thresholds
    details: dict  # the file's contents: {"threshold", "per_group", "objective", "validation_f1", "f1_cost", ...}


def calibrate(run_dir: str | Path, *, objective: str = "f1", max_group_fpr: float = DEFAULT_MAX_GROUP_FPR,
              max_group_fnr: float = DEFAULT_MAX_GROUP_FNR, output_path: str | Path | None = None) -> Calibration:
    """Pick thresholds on a finished validation run and write thresholds.json (default: inside the run).

    `hatelens evaluate --thresholds thresholds.json` applies them; `evaluate.rethreshold` applies them
    to an existing run's scores without scoring again.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown calibration objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    for name, cap in (("--max-group-fpr", max_group_fpr), ("--max-group-fnr", max_group_fnr)):
        if objective in ("max_group_fpr", "group_budget") and not 0.0 <= cap <= 1.0:
            raise ConfigError(f"{name} {cap} must be a rate between 0 and 1")
    run = load_finished_run(run_dir)
    _refuse_test_split(run)
    arrays = _scored_arrays(run)
    y_true, scores, groups = arrays["y_true"], arrays["scores"], arrays["groups"]

    best_threshold, best_f1 = best_f1_threshold(y_true, scores)
    per_group: dict[str, float] = {}
    unmet: list[str] = []
    if objective == "max_group_fpr":
        per_group, _ = budget_thresholds(y_true, scores, groups, fpr_cap=max_group_fpr)
    elif objective == "group_budget":
        per_group, unmet = budget_thresholds(y_true, scores, groups, fpr_cap=max_group_fpr, fnr_cap=max_group_fnr)
        for group in unmet:
            logger.warning("calibration: no threshold keeps %s within FPR <= %.2f and FNR <= %.2f on validation; "
                           "it gets the threshold that misses the budget by least", group, max_group_fpr, max_group_fnr)
    elif objective == "equalize_fpr":
        per_group = equal_fpr_thresholds(y_true, scores, groups)
    thresholds = Thresholds(threshold=best_threshold, per_group=per_group)
    predictions = predict(scores, groups, thresholds)
    validation = binary_rates(y_true, predictions)
    run_predictions = arrays["y_pred"]
    details = {
        "objective": objective,
        "max_group_fpr": max_group_fpr if objective in ("max_group_fpr", "group_budget") else None,
        "max_group_fnr": max_group_fnr if objective == "group_budget" else None,
        "budget_unmet": unmet if objective == "group_budget" else None,
        "source_run": str(run.run_dir),
        "source_data": run.data_file,
        "n": len(y_true),
        "validation_f1": validation["f1"],
        "unconstrained_f1": best_f1,
        "f1_cost": best_f1 - validation["f1"],
        "run_f1": binary_rates(y_true, run_predictions)["f1"],  # at the thresholds the run was scored with
        "run_thresholds": run.metrics.get("run", {}).get("thresholds"),
        "validation_per_group": _per_group_rates(y_true, predictions, groups, thresholds),
        "method": METHODS[objective],
    }
    path = thresholds.save(Path(output_path) if output_path else run.run_dir / "thresholds.json", details)
    logger.info("%s thresholds from %s: F1 %.3f (cost %.3f) -> %s", objective, run.run_dir,
                details["validation_f1"], details["f1_cost"], path)
    return Calibration(path=path, thresholds=thresholds, details={**thresholds.to_dict(), **details})


METHODS = {
    "f1": "global threshold maximising F1 on the validation rows",
    "max_group_fpr": "per-group thresholds maximising overall F1 subject to FPR <= cap in every group "
                     "(coordinate ascent from the best global threshold that meets the cap)",
    "group_budget": "per-group thresholds maximising overall F1 subject to FPR <= cap and FNR <= cap in every group "
                    "(coordinate ascent); a group with no such threshold gets the one with the smallest miss",
    "equalize_fpr": "Fairlearn ThresholdOptimizer (false_positive_rate_parity, balanced_accuracy_score) picks a "
                    "common FPR; each group gets the deterministic threshold whose FPR is nearest to it",
}


# ---- thresholds ----------------------------------------------------------------------------------


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every distinct decision: the lowest score (all hate), midpoints between distinct scores, and
    just above the highest score (all normal)."""
    unique = np.unique(scores)
    midpoints = (unique[:-1] + unique[1:]) / 2
    return np.concatenate([unique[:1], midpoints, [np.nextafter(unique[-1], np.inf)]])


def _f1(tp, fp, fn) -> np.ndarray:
    """F1 of confusion counts; 0 where undefined (no hate row and none predicted) so argmax never meets NaN."""
    return np.nan_to_num(rates_from_counts(tp, fp, np.zeros_like(tp), fn)["f1"], nan=0.0)


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the F1-optimal global threshold; the lowest such threshold on ties."""
    thresholds = candidate_thresholds(scores)
    counts = counts_at_thresholds(y_true, scores, thresholds)
    f1 = _f1(counts["tp"], counts["fp"], counts["fn"])
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def budget_thresholds(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, fpr_cap: float,
                      fnr_cap: float | None = None) -> tuple[dict[str, float], list[str]]:
    """Per-group thresholds with the best overall F1 such that each group's FPR <= fpr_cap (and FNR <= fnr_cap).

    Each group's allowed thresholds are those within its budget; a group where none is (only possible with an
    FNR cap) is allowed those that miss it by least (smallest max(FPR - cap, FNR - cap)) and is returned in the
    list of groups whose budget was not met. Starts from the best single threshold allowed in every group,
    then coordinate ascent: each group in turn takes its allowed threshold that maximises the overall F1 with
    the other groups' fixed, until a pass changes nothing. Returns ({group: threshold}, [unmet groups]).
    """
    thresholds = candidate_thresholds(scores)
    options, unmet, allowed_everywhere = {}, [], np.ones(len(thresholds), dtype=bool)
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        counts = counts_at_thresholds(y_true[rows], scores[rows], thresholds)
        rates = rates_from_counts(**counts)
        miss = np.nan_to_num(rates["fpr"], nan=0.0) - fpr_cap  # a group without normal rows: no FPR
        if fnr_cap is not None:
            miss = np.maximum(miss, np.nan_to_num(rates["fnr"], nan=0.0) - fnr_cap)
        allowed = miss <= 1e-12
        if not allowed.any():
            unmet.append(group)
            allowed = miss <= miss.min() + 1e-12
        allowed_everywhere &= allowed
        options[group] = {"allowed": allowed, **counts}
    return _coordinate_ascent(thresholds, options, y_true, scores, allowed_everywhere), unmet


def _coordinate_ascent(thresholds, options: dict, y_true, scores, allowed_everywhere) -> dict[str, float]:
    overall = counts_at_thresholds(y_true, scores, thresholds)
    overall_f1 = np.where(allowed_everywhere, _f1(overall["tp"], overall["fp"], overall["fn"]), -1.0)
    chosen = dict.fromkeys(options, int(np.argmax(overall_f1)))
    for _ in range(MAX_PASSES):
        changed = False
        for group, option in options.items():
            others = {name: sum(options[other][name][chosen[other]] for other in options if other != group)
                      for name in ("tp", "fp", "fn")}
            f1 = _f1(option["tp"] + others["tp"], option["fp"] + others["fp"], option["fn"] + others["fn"])
            f1 = np.where(option["allowed"], f1, -1.0)
            best = int(np.argmax(f1))
            if f1[best] > f1[chosen[group]] + 1e-12 or not option["allowed"][chosen[group]]:
                changed = changed or best != chosen[group]
                chosen[group] = best
        if not changed:
            break
    return {group: float(thresholds[chosen[group]]) for group in options}


def equal_fpr_thresholds(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Per-group thresholds at the common FPR chosen by Fairlearn's ThresholdOptimizer."""
    from fairlearn.postprocessing import ThresholdOptimizer

    optimizer = ThresholdOptimizer(estimator=_FrozenScores(), constraints="false_positive_rate_parity",
                                   objective="balanced_accuracy_score", prefit=True, predict_method="predict")
    optimizer.fit(scores.reshape(-1, 1), y_true, sensitive_features=groups)
    result = {}
    for group, mix in optimizer.interpolated_thresholder_.interpolation_dict.items():
        rows = groups == group
        normal_scores = scores[rows][y_true[rows] == 0]
        target = sum(weight * _operation_fpr(operation, normal_scores)
                     for weight, operation in ((mix.p0, mix.operation0), (mix.p1, mix.operation1)))
        thresholds = candidate_thresholds(scores[rows])
        fpr = np.array([np.mean(normal_scores >= threshold) if len(normal_scores) else 0.0
                        for threshold in thresholds])
        counts = counts_at_thresholds(y_true[rows], scores[rows], thresholds)
        group_f1 = _f1(counts["tp"], counts["fp"], counts["fn"])
        distance = np.round(np.abs(fpr - target), 12)
        nearest = np.flatnonzero(distance == distance.min())
        result[str(group)] = float(thresholds[nearest[np.argmax(group_f1[nearest])]])
    return result


def _operation_fpr(operation, normal_scores: np.ndarray) -> float:
    """FPR of one of Fairlearn's ThresholdOperations ('>' or '<' a threshold) on a group's normal rows."""
    if len(normal_scores) == 0:
        return 0.0
    predicted = operation(normal_scores)  # a ThresholdOperation is callable: score > t (or < t)
    return float(np.mean(predicted))


class _FrozenScores(ClassifierMixin, BaseEstimator):
    """A fitted 'estimator' whose prediction is the score column it is given: the scores are fixed."""

    def fit(self, features, labels):
        return self

    def predict(self, features):
        return np.asarray(features)[:, 0]

    def __sklearn_is_fitted__(self) -> bool:
        return True


# ---- helpers --------------------------------------------------------------------------------------


def predict(scores: np.ndarray, groups: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """0/1 decisions of `thresholds` on scored rows."""
    return np.array([to_int(label) for label in thresholds.decide(scores.tolist(), groups.tolist())], dtype=int)


def _per_group_rates(y_true, predictions, groups, thresholds: Thresholds) -> dict[str, dict]:
    result = {}
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        rates = binary_rates(y_true[rows], predictions[rows])
        result[group] = {"n": int(rows.sum()), "threshold": thresholds.for_group(group),
                         "fpr": rates["fpr"], "fnr": rates["fnr"], "f1": rates["f1"]}
    return result


def _refuse_test_split(run: FinishedRun) -> None:
    """A run scored on a known test split (by content: the same examples, or the same file bytes) is refused."""
    manifest_path = run.run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    for known in known_test_splits(run.data_file):
        if (manifest.get("examples_sha256") == known["examples_sha256"]
                or (known.get("data_sha256") and manifest.get("data_sha256") == known["data_sha256"])):
            raise ConfigError(f"{run.run_dir} was scored on {run.data_file}, which holds the test split {known['file']}: "
                              "thresholds tuned on test data make test figures meaningless; calibrate a run on "
                              "data/validation.jsonl instead")


def _scored_arrays(run: FinishedRun) -> dict[str, np.ndarray]:
    arrays = run.arrays()
    missing = int(np.isnan(arrays["scores"]).sum())
    if missing:
        raise ConfigError(f"{run.run_dir}: {missing} of {len(arrays['scores'])} rows have no score (generate mode); "
                          "calibration needs a score-mode run (--mode score)")
    return arrays
