"""Metric tests on small arrays computed by hand (1 = hate)."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from hatelens.errors import DataError
from hatelens.evaluation.metrics import (
    INVALID_POLICY,
    bias_aucs,
    binary_rates,
    bootstrap_ci,
    compute_metrics,
    counts_at_thresholds,
    encode_predictions,
    mcnemar_exact,
    paired_bootstrap_delta,
    rate_metric,
    rates_from_counts,
)

# Ten rows, two groups. Group "b" has no hate rows. None = an invalid answer.
#  row group label   prediction score  headline (invalid = wrong)   valid only
#   0   a     hate    hate      0.9    TP                           TP
#   1   a     hate    normal    0.4    FN                           FN
#   2   a     hate    None      0.6    FN (invalid)                 -
#   3   a     normal  normal    0.2    TN                           TN
#   4   a     normal  hate      0.7    FP                           FP
#   5   a     normal  normal    0.1    TN                           TN
#   6   b     normal  normal    0.3    TN                           TN
#   7   b     normal  hate      0.8    FP                           FP
#   8   b     normal  None      0.5    FP (invalid)                 -
#   9   b     normal  normal    0.2    TN                           TN
GROUPS = ["a"] * 6 + ["b"] * 4
LABELS = ["hate", "hate", "hate", "normal", "normal", "normal", "normal", "normal", "normal", "normal"]
PREDICTIONS = ["hate", "normal", None, "normal", "hate", "normal", "normal", "hate", None, "normal"]
SCORES = [0.9, 0.4, 0.6, 0.2, 0.7, 0.1, 0.3, 0.8, 0.5, 0.2]


@pytest.fixture(scope="module")
def metrics() -> dict:
    return compute_metrics(LABELS, PREDICTIONS, SCORES, GROUPS, n_bootstrap=200, seed=0)


def test_headline_metrics_count_invalid_answers_as_errors(metrics):
    # TP=1, FN=2, TN=4, FP=3
    assert metrics["confusion_matrix"] == {"tn": 4, "fp": 3, "fn": 2, "tp": 1}
    assert (metrics["n"], metrics["n_valid"], metrics["n_invalid"]) == (10, 8, 2)
    assert metrics["invalid_rate"] == pytest.approx(0.2)
    assert metrics["accuracy"] == pytest.approx(5 / 10)
    assert metrics["precision"] == pytest.approx(1 / 4)  # tp / (tp + fp)
    assert metrics["recall"] == pytest.approx(1 / 3)  # tp / (tp + fn)
    assert metrics["f1"] == pytest.approx(2 / 7)  # 2tp / (2tp + fp + fn)
    assert metrics["fpr"] == pytest.approx(3 / 7)
    assert metrics["fnr"] == pytest.approx(2 / 3)
    assert metrics["invalid_policy"] == INVALID_POLICY
    assert "error" in metrics["invalid_policy"]


def test_valid_only_leaves_invalid_rows_out(metrics):
    # rows 2 and 8 dropped: TP=1, FN=1, TN=4, FP=2
    valid = metrics["valid_only"]
    assert valid["n"] == 8
    assert valid["confusion_matrix"] == {"tn": 4, "fp": 2, "fn": 1, "tp": 1}
    assert valid["accuracy"] == pytest.approx(5 / 8)
    assert valid["precision"] == pytest.approx(1 / 3)
    assert valid["recall"] == pytest.approx(1 / 2)
    assert valid["f1"] == pytest.approx(2 / 5)
    assert valid["fpr"] == pytest.approx(2 / 6)
    assert valid["fnr"] == pytest.approx(1 / 2)


def test_per_group_metrics(metrics):
    a, b = metrics["per_group"]["a"], metrics["per_group"]["b"]
    # group a: TP=1, FN=2 (one invalid), TN=2, FP=1
    assert (a["n"], a["n_invalid"]) == (6, 1)
    assert a["invalid_rate"] == pytest.approx(1 / 6)
    assert a["accuracy"] == pytest.approx(3 / 6)
    assert a["precision"] == pytest.approx(1 / 2)
    assert a["recall"] == pytest.approx(1 / 3)
    assert a["f1"] == pytest.approx(2 / 5)
    assert a["fpr"] == pytest.approx(1 / 3)
    assert a["fnr"] == pytest.approx(2 / 3)
    assert a["roc_auc"] == pytest.approx(7 / 9)  # hate 0.9, 0.4, 0.6 vs normal 0.2, 0.7, 0.1: 3+2+2 of 9 pairs
    # group b: TN=2, FP=2 (one invalid), no hate rows
    assert (b["n"], b["n_invalid"]) == (4, 1)
    assert b["accuracy"] == pytest.approx(2 / 4)
    assert b["precision"] == pytest.approx(0.0)  # hate predicted twice, never right: defined, 0
    assert b["fpr"] == pytest.approx(2 / 4)
    # no hate rows: recall, FNR and AUC are undefined -> None (Fairlearn alone would say FNR 0.0)
    assert b["recall"] is None
    assert b["fnr"] is None
    assert b["roc_auc"] is None
    # sklearn's F1 = 2tp / (2tp + fp + fn) = 0 / 2: defined although recall is not
    assert b["f1"] == pytest.approx(0.0)
    assert b["ci"]["fnr"] is None
    assert metrics["bootstrap"]["per_group_n_skipped"]["b"]["fnr"] == 200


def test_aucs_over_all_rows(metrics):
    # hate scores 0.9, 0.4, 0.6 against 7 normal scores: 7 + 4 + 5 = 16 of 21 pairs ranked right
    assert metrics["roc_auc"] == pytest.approx(16 / 21)
    # ranked: 0.9 H, 0.8, 0.7, 0.6 H, 0.5, 0.4 H, ... -> AP = (1/1 + 2/4 + 3/6) / 3
    assert metrics["pr_auc"] == pytest.approx(2 / 3)
    assert metrics["n_scored"] == 10


def test_bias_aucs_of_the_ten_rows(metrics):
    bias = metrics["bias_auc"]
    assert bias["a"]["subgroup_auc"] == pytest.approx(7 / 9)
    assert bias["a"]["bpsn_auc"] is None  # a's normal rows + background hate rows: b has none
    # a's hate rows (0.9, 0.4, 0.6) vs b's normal rows (0.3, 0.8, 0.5, 0.2): 4 + 2 + 3 of 12
    assert bias["a"]["bnsp_auc"] == pytest.approx(9 / 12)
    assert bias["b"]["subgroup_auc"] is None  # one class
    assert bias["b"]["bpsn_auc"] == pytest.approx(9 / 12)  # b's normal rows vs a's hate rows
    assert bias["b"]["bnsp_auc"] is None  # b has no hate rows


def test_bpsn_and_bnsp_separate_the_two_kinds_of_bias():
    # group a: hate 0.8, normal 0.75 (its normal text scores high); group b: hate 0.7, normal 0.3
    y_true = [1, 0, 1, 0]
    scores = [0.8, 0.75, 0.7, 0.3]
    groups = ["a", "a", "b", "b"]
    bias = bias_aucs(y_true, scores, groups)
    assert bias["a"] == {"subgroup_auc": 1.0, "bpsn_auc": 0.0, "bnsp_auc": 1.0}  # 0.75 (a normal) > 0.7 (b hate)
    assert bias["b"] == {"subgroup_auc": 1.0, "bpsn_auc": 1.0, "bnsp_auc": 0.0}  # 0.7 (b hate) < 0.75 (a normal)


def test_missing_scores_leave_aucs_to_the_scored_rows():
    # the 0.4-scored hate row loses its score: hate 0.9, 0.6 vs normal 0.2, 0.7 -> 2 + 1 of 4 pairs
    result = compute_metrics(
        ["hate", "hate", "hate", "normal", "normal"],
        ["hate", "normal", "hate", "normal", "hate"],
        [0.9, None, 0.6, 0.2, 0.7],
        ["a"] * 5,
        n_bootstrap=20,
    )
    assert result["n_scored"] == 4
    assert result["roc_auc"] == pytest.approx(3 / 4)
    assert result["n"] == 5


def test_undefined_values_are_none_without_warnings():
    # every row normal and every answer normal: no hate anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(["normal"] * 4, ["normal"] * 4, [0.1, 0.2, 0.3, 0.4], ["a", "a", "b", "b"], n_bootstrap=20)
    for name in ("precision", "recall", "f1", "fnr", "roc_auc", "pr_auc"):
        assert result[name] is None, name
    assert result["fpr"] == 0.0
    assert result["accuracy"] == 1.0
    assert result["per_group"]["a"]["fnr"] is None
    assert result["bias_auc"]["a"] == {"subgroup_auc": None, "bpsn_auc": None, "bnsp_auc": None}
    json.dumps(result, allow_nan=False)


def test_every_answer_invalid():
    result = compute_metrics(["hate", "normal"], [None, None], [None, None], ["a", "b"], n_bootstrap=20)
    assert result["accuracy"] == 0.0
    assert result["confusion_matrix"] == {"tn": 0, "fp": 1, "fn": 1, "tp": 0}
    assert result["valid_only"]["n"] == 0
    assert result["valid_only"]["accuracy"] is None
    assert result["roc_auc"] is None and result["n_scored"] == 0
    json.dumps(result, allow_nan=False)


def test_metrics_json_keys(metrics):
    assert set(metrics) == {
        "n", "n_valid", "n_invalid", "invalid_rate", "n_scored", "accuracy", "precision", "recall", "f1",
        "fpr", "fnr", "confusion_matrix", "roc_auc", "pr_auc", "invalid_policy", "valid_only", "ci",
        "bootstrap", "bias_auc", "per_group",
    }  # fmt: skip
    assert set(metrics["per_group"]["a"]) == {
        "n", "n_invalid", "invalid_rate", "accuracy", "precision", "recall", "f1", "fpr", "fnr", "roc_auc", "ci",
    }  # fmt: skip
    json.dumps(metrics, allow_nan=False)


def test_bad_inputs_name_the_row():
    with pytest.raises(DataError, match=r"prediction 'yes' in row 1"):
        compute_metrics(["hate", "normal"], ["hate", "yes"], [None, None], ["a", "a"])
    with pytest.raises(DataError, match=r"score nan in row 0"):
        compute_metrics(["hate"], ["hate"], [float("nan")], ["a"])
    with pytest.raises(DataError, match=r"group None in row 0"):
        compute_metrics(["hate"], ["hate"], [0.5], [None])


def test_encode_predictions_scores_invalid_as_the_wrong_class():
    y_true, y_pred, invalid = encode_predictions(["hate", "normal", "hate"], [None, None, "hate"])
    assert y_true.tolist() == [1, 0, 1]
    assert y_pred.tolist() == [0, 1, 1]
    assert invalid.tolist() == [True, True, False]


def test_binary_rates_by_hand():
    # TP=2, FN=1, TN=1, FP=1
    rates = binary_rates([1, 1, 1, 0, 0], [1, 1, 0, 0, 1])
    assert rates == pytest.approx(
        {"accuracy": 3 / 5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "fpr": 1 / 2, "fnr": 1 / 3}
    )


def test_bootstrap_interval_holds_the_estimate_and_repeats_for_a_seed(metrics):
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, 1 - y_true)
    estimate = binary_rates(y_true, y_pred)["f1"]

    first = bootstrap_ci(f1_score, (y_true, y_pred), n_bootstrap=100, seed=3)
    again = bootstrap_ci(f1_score, (y_true, y_pred), n_bootstrap=100, seed=3)
    other = bootstrap_ci(f1_score, (y_true, y_pred), n_bootstrap=100, seed=4)
    low, high = first["ci"]
    assert low < estimate < high
    assert first == again
    assert other["ci"] != first["ci"]
    assert first["n_skipped"] == 0
    for name in ("accuracy", "f1", "fpr", "roc_auc"):
        low, high = metrics["ci"][name]
        assert low <= metrics[name] <= high, name


def test_bootstrap_counts_skipped_resamples():
    # one hate row in 20: about (19/20)^20 = 36% of resamples have none, so FNR is undefined there
    y_true = np.array([1] + [0] * 19)
    y_pred = np.zeros(20, dtype=int)

    def fnr(truth, prediction):
        return binary_rates(truth, prediction)["fnr"]

    result = bootstrap_ci(fnr, (y_true, y_pred), n_bootstrap=200, seed=0)
    assert 30 < result["n_skipped"] < 120
    assert result["ci"] == [1.0, 1.0]
    never = bootstrap_ci(fnr, (np.zeros(5, dtype=int), np.zeros(5, dtype=int)), n_bootstrap=50, seed=0)
    assert never == {"ci": None, "n_skipped": 50}


def test_mcnemar_exact_matches_the_binomial_formula():
    # b = 5 rows only A got right, c = 1 row only B got right, 4 rows both right, 2 both wrong
    correct_a = [True] * 5 + [False] + [True] * 4 + [False] * 2
    correct_b = [False] * 5 + [True] + [True] * 4 + [False] * 2
    result = mcnemar_exact(correct_a, correct_b)
    # two-sided: 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64
    assert (result["b"], result["c"]) == (5, 1)
    assert result["p_value"] == pytest.approx(14 / 64)
    assert mcnemar_exact([True, False], [True, False]) == {"b": 0, "c": 0, "p_value": 1.0}


def test_paired_bootstrap_delta_is_b_minus_a():
    y_true = np.array([1, 0] * 20)
    pred_a = np.array([1, 1, 0, 0] * 10)  # right on half the rows
    pred_b = y_true.copy()  # right everywhere

    result = paired_bootstrap_delta(accuracy_score, y_true, pred_a, pred_b, n_bootstrap=100, seed=0)
    assert result["delta"] == pytest.approx(0.5)
    low, high = result["ci"]
    assert 0 < low <= 0.5 <= high
    worse = paired_bootstrap_delta(accuracy_score, y_true, pred_b, pred_a, n_bootstrap=100, seed=0)
    assert worse["delta"] == pytest.approx(-0.5)
    assert worse["ci"][1] < 0


def test_paired_bootstrap_delta_within_groups():
    # group "a": A has FPR 1/2 on its two normal rows, B has FPR 0; group "b" is only hate rows
    y_true = np.array([0, 0, 1, 1, 1, 1])
    pred_a = np.array([1, 0, 1, 1, 1, 1])
    pred_b = np.array([0, 0, 1, 1, 1, 1])
    groups = np.array(["a", "a", "b", "b", "b", "b"])

    def fpr_of_a(truth, prediction, group):
        return binary_rates(truth[group == "a"], prediction[group == "a"])["fpr"]

    result = paired_bootstrap_delta(fpr_of_a, y_true, pred_a, pred_b, groups=groups, n_bootstrap=100, seed=0)
    assert result["delta"] == pytest.approx(-0.5)
    assert result["n_skipped"] == 0  # group a keeps its two rows, both normal, in every resample
    assert result["ci"][0] == pytest.approx(-1.0) and result["ci"][1] == pytest.approx(0.0)


# ---- the vectorised rate core equals scikit-learn / Fairlearn (binary_rates) ----

RATES = ("accuracy", "precision", "recall", "f1", "fpr", "fnr")


def _random_pairs(seed: int):
    """Random 0/1 arrays of many sizes, including the degenerate ones: empty, one class, nothing predicted."""
    rng = np.random.default_rng(seed)
    pairs = [(np.array([], dtype=int), np.array([], dtype=int)), (np.zeros(5, int), np.zeros(5, int)),
             (np.ones(4, int), np.zeros(4, int)), (np.zeros(4, int), np.ones(4, int)), (np.ones(3, int), np.ones(3, int))]
    for _ in range(200):
        size = int(rng.integers(1, 30))
        pairs.append((rng.integers(0, 2, size), (rng.random(size) < rng.random()).astype(int)))
    return pairs


def _as_none(value):
    return None if np.isnan(value) else pytest.approx(float(value), abs=1e-12)


def test_rates_from_counts_equal_scikit_learn_on_random_and_degenerate_arrays():
    pairs = _random_pairs(seed=3)
    counts = np.array([[np.sum((t == 1) & (p == 1)), np.sum((t == 0) & (p == 1)), np.sum((t == 0) & (p == 0)),
                        np.sum((t == 1) & (p == 0))] for t, p in pairs])
    rates = rates_from_counts(*counts.T)  # all pairs at once, element by element
    for index, (y_true, y_pred) in enumerate(pairs):
        expected = binary_rates(y_true, y_pred)
        assert {name: _as_none(rates[name][index]) for name in RATES} == expected, (y_true, y_pred)
        for name in RATES:  # the bootstrap's scalar form too
            assert _as_none(rate_metric(name)(y_true, y_pred)) == expected[name]
    assert any(np.isnan(rates["f1"])) and any(np.isnan(rates["fpr"])) and any(np.isnan(rates["fnr"]))


def test_counts_at_thresholds_equal_thresholding_each_time():
    rng = np.random.default_rng(0)
    y_true, scores = rng.integers(0, 2, 40), rng.random(40)
    thresholds = np.array([0.0, *np.sort(scores)[::7], 1.01])
    counts = counts_at_thresholds(y_true, scores, thresholds)
    for index, threshold in enumerate(thresholds):
        predicted = (scores >= threshold).astype(int)
        f1 = f1_score(y_true, predicted, zero_division=np.nan)
        assert rates_from_counts(**{name: value[index] for name, value in counts.items()})["f1"] == (
            pytest.approx(f1) if not np.isnan(f1) else pytest.approx(np.nan, nan_ok=True))
    assert counts["tp"][0] == y_true.sum() and counts["tp"][-1] == 0 and counts["fp"][-1] == 0


def test_resampling_metrics_equal_scikit_learn_on_random_and_tied_scores():
    """The bootstrap's fast metrics (no sklearn input checks) give sklearn's numbers, ties and NaN scores too."""
    from hatelens.evaluation.metrics import _aucs, binary_rates, resample_aucs, resample_rates

    rng = np.random.default_rng(7)
    for case in range(200):
        n = int(rng.integers(2, 50))
        y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
        scores = rng.integers(0, 5, n) / 4.0 if case % 2 else rng.random(n)  # every other case full of ties
        if case % 5 == 0:
            scores[rng.random(n) < 0.25] = np.nan
        expected, fast = _aucs(y_true, scores), resample_aucs(y_true, scores)
        for name in expected:
            assert expected[name] == pytest.approx(fast[name], abs=1e-12, nan_ok=True)
        rates = resample_rates("accuracy", "precision", "recall", "f1", "fpr", "fnr")(y_true, y_pred)
        for name, value in binary_rates(y_true, y_pred).items():
            assert (math.nan if value is None else value) == pytest.approx(rates[name], abs=1e-12, nan_ok=True)
