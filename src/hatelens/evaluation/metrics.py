"""Numbers for one run: overall and per-group rates, AUCs, bias AUCs, bootstrap intervals, McNemar.

Every number comes from scikit-learn or Fairlearn. Codes: 1 = hate (the positive class), 0 = normal.
A metric that is undefined on its rows (FNR of a group without hate rows, precision with no hate
predicted, AUC with one class) is None in the output: never 0, never NaN.
"""

import math
from numbers import Real
from typing import Callable, Sequence

import numpy as np
from fairlearn.metrics import MetricFrame, count, false_negative_rate, false_positive_rate
from scipy.stats import binomtest, rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from hatelens.config import CONFIDENCE, N_BOOTSTRAP
from hatelens.data.labels import encode_predictions
from hatelens.errors import DataError
from hatelens.evaluation.bootstrap import bootstrap_ci, bootstrap_named, paired_bootstrap_delta

__all__ = [
    "INVALID_POLICY",
    "binary_rates",
    "counts_at_thresholds",
    "rate_metric",
    "rates_from_counts",
    "bias_aucs",
    "bootstrap_ci",
    "compute_metrics",
    "confusion_counts",
    "encode_predictions",
    "mcnemar_exact",
    "paired_bootstrap_delta",
]

INVALID_POLICY = (
    "An invalid (unparseable) answer counts as an error in the headline metrics: a hate row with an "
    "invalid answer is scored as predicted normal (a false negative) and a normal row as predicted "
    "hate (a false positive). 'valid_only' holds the same metrics over valid answers only."
)
RATE_NAMES = ("accuracy", "precision", "recall", "f1", "fpr", "fnr")
PER_GROUP_RESAMPLING = "per-group intervals resample rows within the group (the group's size is fixed)"


# ---- one metric each, (y_true, y_pred) -> float, NaN when undefined (MetricFrame-ready) ----


def _precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    # zero_division=NaN: precision without predicted hate and recall without hate rows are undefined
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", pos_label=1, zero_division=np.nan
    )
    return float(precision), float(recall), float(f1)


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(accuracy_score(y_true, y_pred))


def _precision(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _precision_recall_f1(y_true, y_pred)[0]


def _recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _precision_recall_f1(y_true, y_pred)[1]


def _f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _precision_recall_f1(y_true, y_pred)[2]


def _fpr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """fp / (fp + tn). Fairlearn returns 0.0 when there are no normal rows; that is undefined: NaN."""
    if not np.any(y_true == 0):
        return math.nan
    return float(false_positive_rate(y_true, y_pred, pos_label=1))


def _fnr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """fn / (fn + tp). Fairlearn returns 0.0 when there are no hate rows; that is undefined: NaN."""
    if not np.any(y_true == 1):
        return math.nan
    return float(false_negative_rate(y_true, y_pred, pos_label=1))


def _fpr_fnr(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {"fpr": _fpr(y_true, y_pred), "fnr": _fnr(y_true, y_pred)}


def _roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC over rows with a score (NaN score = no score); NaN with fewer than two classes."""
    scored = ~np.isnan(scores)
    if len(np.unique(y_true[scored])) < 2:
        return math.nan
    return float(roc_auc_score(y_true[scored], scores[scored]))


def _pr_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision over rows with a score; NaN with fewer than two classes."""
    scored = ~np.isnan(scores)
    if len(np.unique(y_true[scored])) < 2:
        return math.nan
    return float(average_precision_score(y_true[scored], scores[scored], pos_label=1))


def _aucs(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"roc_auc": _roc_auc(y_true, scores), "pr_auc": _pr_auc(y_true, scores)}


def resample_aucs(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC and average precision as _aucs computes them, without scikit-learn's per-call input checks:
    what the bootstrap evaluates on each resample (tests/test_metrics.py proves them equal to sklearn).
    ROC-AUC is the Mann-Whitney statistic over average ranks (ties count one half); average precision
    sums precision x recall gained at each distinct score, from the highest down."""
    scored = ~np.isnan(scores)
    y_true, scores = y_true[scored].astype(bool), scores[scored]
    n_hate = int(y_true.sum())
    n_normal = len(y_true) - n_hate
    if n_hate == 0 or n_normal == 0:
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    ranks = rankdata(scores)
    roc_auc = (ranks[y_true].sum() - n_hate * (n_hate + 1) / 2) / (n_hate * n_normal)
    order = np.argsort(-scores, kind="mergesort")
    ordered_scores, ordered_truth = scores[order], y_true[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ordered_scores)), len(ordered_scores) - 1]
    true_positives = np.cumsum(ordered_truth)[last_of_each_score]
    precision = true_positives / (last_of_each_score + 1)
    recall_gained = np.diff(np.r_[0, true_positives]) / n_hate
    return {"roc_auc": float(roc_auc), "pr_auc": float(np.sum(recall_gained * precision))}


def _count_invalid(y_true: np.ndarray, y_pred: np.ndarray, invalid: np.ndarray) -> int:
    return int(np.sum(invalid))


def _group_roc_auc(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> float:
    return _roc_auc(y_true, scores)


def _clean(value: float | int | None) -> float | None:
    """A JSON-ready number: NaN -> None, numpy scalars -> float."""
    if value is None or math.isnan(value):
        return None
    return float(value)


# ---- public building blocks (compare.py uses these too) ----


def binary_rates(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float | None]:
    """accuracy, precision, recall, f1, fpr, fnr of 0/1 arrays (1 = hate); None where undefined."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return dict.fromkeys(RATE_NAMES)
    precision, recall, f1 = _precision_recall_f1(y_true, y_pred)
    rates = {"accuracy": _accuracy(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1}
    rates.update(_fpr_fnr(y_true, y_pred))
    return {name: _clean(value) for name, value in rates.items()}


def confusion_counts(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, int]:
    """{"tn", "fp", "fn", "tp"} of 0/1 arrays (1 = hate)."""
    if len(y_true) == 0:
        return {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def bias_aucs(y_true: Sequence[int], scores: Sequence[float], groups: Sequence[str]) -> dict[str, dict]:
    """Jigsaw bias AUCs (Borkan et al. 2019) per group, over rows with a score (NaN = none).

    subgroup_auc: the group's rows. bpsn_auc: the group's normal rows + background hate rows.
    bnsp_auc: the group's hate rows + background normal rows. Background = every row not in the group.
    """
    y_true, scores = np.asarray(y_true, dtype=int), np.asarray(scores, dtype=float)
    groups = np.asarray(groups)
    hate = y_true == 1
    result = {}
    for group in np.unique(groups):
        in_group = groups == group
        subsets = {
            "subgroup_auc": in_group,
            "bpsn_auc": (in_group & ~hate) | (~in_group & hate),
            "bnsp_auc": (in_group & hate) | (~in_group & ~hate),
        }
        result[str(group)] = {
            name: _clean(_roc_auc(y_true[rows], scores[rows])) for name, rows in subsets.items()
        }
    return result


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test on paired correctness: a two-sided binomial test on the discordant pairs.

    b = rows A got right and B wrong, c = rows A got wrong and B right; p_value 1.0 when b + c = 0.
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if len(correct_a) != len(correct_b):
        raise DataError(f"{len(correct_a)} rows for system A but {len(correct_b)} for system B")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"b": b, "c": c, "p_value": p_value}


# ---- the vectorised core: rates of many confusion matrices at once ----
# The same numbers as binary_rates (tests/test_metrics.py proves it against scikit-learn), for the
# loops that need thousands of them: bootstrap resamples, threshold searches, validation during training.


def rates_from_counts(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """precision, recall, f1, fpr, fnr, accuracy of confusion counts (arrays of one shape, element by
    element); NaN where a rate is undefined (a zero denominator), as in binary_rates."""
    tp, fp, tn, fn = (np.asarray(count, dtype=float) for count in (tp, fp, tn, fn))
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "fpr": _ratio(fp, fp + tn), "fnr": _ratio(fn, fn + tp), "accuracy": _ratio(tp + tn, tp + fp + tn + fn)}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.full(np.shape(denominator), np.nan), where=denominator > 0)


def counts_at_thresholds(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """tp, fp, tn, fn of "hate when score >= t" for each threshold t (one entry per threshold)."""
    predicted = np.asarray(scores)[None, :] >= np.asarray(thresholds)[:, None]
    hate = np.asarray(y_true).astype(bool)[None, :]
    return {"tp": (predicted & hate).sum(axis=1), "fp": (predicted & ~hate).sum(axis=1),
            "tn": (~predicted & ~hate).sum(axis=1), "fn": (~predicted & hate).sum(axis=1)}


def rate_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """(y_true, y_pred) -> one rate of 0/1 arrays, NaN where undefined: a fast metric for the bootstrap."""

    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        hate, predicted = y_true == 1, y_pred == 1
        counts = (np.sum(hate & predicted), np.sum(~hate & predicted), np.sum(~hate & ~predicted),
                  np.sum(hate & ~predicted))
        return float(rates_from_counts(*counts)[name])

    metric.__name__ = name
    return metric


def resample_rates(*names: str) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """(y_true, y_pred) -> {name: rate} through the vectorised core: what the bootstrap evaluates on each
    of its resamples (scikit-learn's input checks cost ~5 ms a call: 70 s for one run's intervals)."""

    def rates(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
        hate, predicted = y_true == 1, y_pred == 1
        values = rates_from_counts(np.sum(hate & predicted), np.sum(~hate & predicted), np.sum(~hate & ~predicted),
                                   np.sum(hate & ~predicted))
        return {name: float(values[name]) for name in names}

    return rates


# ---- the metrics.json of one run ----


def compute_metrics(
    labels: Sequence[str],
    predictions: Sequence[str | None],
    scores: Sequence[float | None],
    groups: Sequence[str],
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """All numbers of one run as a JSON-ready dict (metrics.json).

    labels "hate"/"normal"; predictions "hate"/"normal"/None (None = invalid answer, counted as an
    error: see INVALID_POLICY); scores P(hate) or None (AUCs use the scored rows); groups one
    string per row. Intervals are 95% percentile bootstrap intervals over n_bootstrap resamples.
    """
    if len(labels) == 0:
        raise DataError("no rows to compute metrics on; the predictions are empty")
    y_true, y_pred, invalid = encode_predictions(labels, predictions)
    score_array = _score_array(scores, len(y_true))
    group_array = _group_array(groups, len(y_true))
    n_invalid = int(invalid.sum())
    resampling = {"n_bootstrap": n_bootstrap, "seed": seed, "confidence": CONFIDENCE}

    overall_ci = bootstrap_named(resample_rates(*RATE_NAMES), (y_true, y_pred), **resampling)
    overall_ci.update(bootstrap_named(resample_aucs, (y_true, score_array), **resampling))
    per_group, per_group_skipped = _per_group(
        y_true, y_pred, invalid, score_array, group_array, resampling
    )
    valid = ~invalid
    return {
        "n": len(y_true),
        "n_valid": len(y_true) - n_invalid,
        "n_invalid": n_invalid,
        "invalid_rate": n_invalid / len(y_true),
        "n_scored": int(np.sum(~np.isnan(score_array))),
        **binary_rates(y_true, y_pred),
        "confusion_matrix": confusion_counts(y_true, y_pred),
        "roc_auc": _clean(_roc_auc(y_true, score_array)),
        "pr_auc": _clean(_pr_auc(y_true, score_array)),
        "invalid_policy": INVALID_POLICY,
        "valid_only": {
            "n": int(valid.sum()),
            **binary_rates(y_true[valid], y_pred[valid]),
            "confusion_matrix": confusion_counts(y_true[valid], y_pred[valid]),
        },
        "ci": {name: interval["ci"] for name, interval in overall_ci.items()},
        "bootstrap": {
            **resampling,
            "method": f"percentile; rows resampled with replacement; {PER_GROUP_RESAMPLING}",
            "n_skipped": {name: interval["n_skipped"] for name, interval in overall_ci.items()},
            "per_group_n_skipped": per_group_skipped,
        },
        "bias_auc": bias_aucs(y_true, score_array, group_array),
        "per_group": per_group,
    }


def _per_group(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    invalid: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    resampling: dict,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """One Fairlearn MetricFrame for every per-group number, plus FPR/FNR intervals per group.

    Returns (per-group metrics, per-group count of bootstrap resamples skipped as undefined).
    """
    frame = MetricFrame(
        metrics={
            "n": count,
            "n_invalid": _count_invalid,
            "accuracy": _accuracy,
            "precision": _precision,
            "recall": _recall,
            "f1": _f1,
            "fpr": _fpr,
            "fnr": _fnr,
            "roc_auc": _group_roc_auc,
        },
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
        sample_params={"n_invalid": {"invalid": invalid}, "roc_auc": {"scores": scores}},
    )
    result, skipped = {}, {}
    for group, row in frame.by_group.iterrows():
        in_group = groups == group
        intervals = bootstrap_named(resample_rates("fpr", "fnr"), (y_true[in_group], y_pred[in_group]), **resampling)
        n, n_invalid = int(row["n"]), int(row["n_invalid"])
        result[str(group)] = {
            "n": n,
            "n_invalid": n_invalid,
            "invalid_rate": n_invalid / n,
            **{name: _clean(row[name]) for name in (*RATE_NAMES, "roc_auc")},
            "ci": {name: interval["ci"] for name, interval in intervals.items()},
        }
        skipped[str(group)] = {name: interval["n_skipped"] for name, interval in intervals.items()}
    return result, skipped


def _score_array(scores: Sequence[float | None], n_rows: int) -> np.ndarray:
    """Scores as floats with NaN for a missing score; a NaN handed in is a bug upstream, so an error."""
    if len(scores) != n_rows:
        raise DataError(f"{len(scores)} scores for {n_rows} rows; give one per row (None for no score)")
    for row, score in enumerate(scores):
        if score is not None and not (isinstance(score, Real) and 0.0 <= score <= 1.0):
            raise DataError(f"score {score!r} in row {row} is not a probability in [0, 1] or None")
    return np.array([math.nan if score is None else float(score) for score in scores], dtype=float)


def _group_array(groups: Sequence[str], n_rows: int) -> np.ndarray:
    if len(groups) != n_rows:
        raise DataError(f"{len(groups)} groups for {n_rows} rows; give one group name per row")
    for row, group in enumerate(groups):
        if not isinstance(group, str):
            raise DataError(f"group {group!r} in row {row} is not a string; name every row's group")
    return np.array(groups, dtype=object)
