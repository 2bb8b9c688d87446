"""Percentile bootstrap intervals: rows resampled with replacement by a seeded numpy Generator.

A resample on which the metric is undefined (None or NaN: e.g. FNR of a resample without hate rows)
is skipped, not counted as 0, and the number skipped is reported beside the interval.
"""

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from hatelens.config import CONFIDENCE, N_BOOTSTRAP

# metric_fn(*arrays) -> {name: value}; value None or NaN when undefined on those rows
NamedMetric = Callable[..., Mapping[str, float | None]]


def is_undefined(value: float | None) -> bool:
    """True for None or NaN: a metric with no meaning on its rows."""
    return value is None or math.isnan(value)


def bootstrap_named(
    metric_fn: NamedMetric,
    arrays: Sequence[Sequence],
    *,
    n_bootstrap: int,
    seed: int,
    confidence: float = CONFIDENCE,
    strata: Sequence | None = None,
) -> dict[str, dict]:
    """Intervals of several metrics from the same resamples: {name: {"ci": [lo, hi], "n_skipped"}}.

    `strata`, when given, keeps each stratum's size fixed: rows are resampled within each stratum.
    `ci` is None when no resample gave a defined value (or n_bootstrap is 0).
    """
    columns = [np.asarray(array) for array in arrays]
    names = list(metric_fn(*columns))  # also checks metric_fn runs on the full rows
    values: dict[str, list[float]] = {name: [] for name in names}
    skipped = dict.fromkeys(names, 0)
    strata_rows = _strata_rows(strata, len(columns[0]))
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap if len(columns[0]) else 0):
        rows = np.concatenate([rng.choice(stratum, size=len(stratum)) for stratum in strata_rows])
        for name, value in metric_fn(*(column[rows] for column in columns)).items():
            if is_undefined(value):
                skipped[name] += 1
            else:
                values[name].append(float(value))
    tail_percent = 100 * (1 - confidence) / 2
    return {
        name: {
            "ci": _percentiles(values[name], tail_percent) if values[name] else None,
            "n_skipped": skipped[name],
        }
        for name in names
    }


def bootstrap_ci(
    metric_fn: Callable[..., float | None],
    arrays: Sequence[Sequence],
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict:
    """Percentile interval of metric_fn(*arrays) over rows resampled with replacement.

    Returns {"ci": [lo, hi] or None, "n_skipped": resamples where the metric was undefined}.
    """
    result = bootstrap_named(
        lambda *columns: {"value": metric_fn(*columns)},
        arrays,
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
    )
    return result["value"]


def paired_bootstrap_delta(
    metric_fn: Callable[..., float | None],
    y_true: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    *,
    groups: Sequence[str] | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict:
    """delta = metric(b) - metric(a), with an interval from resampling the same rows for both systems.

    Without groups, metric_fn(y_true, y_pred) and rows are resampled from the whole set. With
    groups, metric_fn(y_true, y_pred, groups) (e.g. the FPR of one group) and rows are resampled
    within each group, so every group keeps its size in every resample.
    Returns {"delta": float or None, "ci": [lo, hi] or None, "n_skipped": int}.
    """
    arrays = [np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)]
    if groups is not None:
        arrays.append(np.asarray(groups))

    def delta(truth, a, b, *group_column) -> dict[str, float | None]:
        value_a = metric_fn(truth, a, *group_column)
        value_b = metric_fn(truth, b, *group_column)
        if is_undefined(value_a) or is_undefined(value_b):
            return {"delta": None}
        return {"delta": float(value_b) - float(value_a)}

    result = bootstrap_named(
        delta, arrays, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence, strata=groups
    )
    return {"delta": delta(*arrays)["delta"], **result["delta"]}


def _strata_rows(strata: Sequence | None, n_rows: int) -> list[np.ndarray]:
    """Row indices of each stratum (one stratum holding every row when strata is None)."""
    if strata is None:
        return [np.arange(n_rows)]
    strata = np.asarray(strata)
    return [np.flatnonzero(strata == value) for value in np.unique(strata)]


def _percentiles(values: list[float], tail_percent: float) -> list[float]:
    low, high = np.percentile(values, [tail_percent, 100 - tail_percent])
    return [float(low), float(high)]
