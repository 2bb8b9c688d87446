"""How a score becomes a label: one global threshold, optionally one per group.

A prediction is "hate" when score >= the row's group threshold (the global one for groups not
listed). A row without a score (generate mode) gets no decision here: its answer decides.
thresholds.json (written by `hatelens calibrate`) holds "threshold", "per_group" and whatever the
calibration recorded beside them (objective, validation F1, ...).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hatelens import runs
from hatelens.config import DEFAULT_THRESHOLD
from hatelens.data.labels import HATE, NORMAL
from hatelens.errors import ConfigError

# Calibration may pick "above every score" to mean "nothing is hate"; with scores up to 1.0 that is
# the float just above 1, so it is the one value over 1 a thresholds file may hold.
ABOVE_ANY_SCORE = math.nextafter(1.0, math.inf)


@dataclass(frozen=True)
class Thresholds:
    """The decision rule of a run or a server: a global threshold and per-group exceptions."""

    threshold: float = DEFAULT_THRESHOLD
    per_group: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        _check_value(self.threshold, "threshold", "thresholds")
        for group, value in self.per_group.items():
            _check_value(value, f"per_group.{group}", "thresholds")

    def for_group(self, group: str) -> float:
        return self.per_group.get(group, self.threshold)

    def decide(self, scores: Sequence[float | None], groups: Sequence[str]) -> list[str | None]:
        """One label per row: HATE when score >= the group's threshold; None where there is no score."""
        return [None if score is None else (HATE if score >= self.for_group(group) else NORMAL)
                for score, group in zip(scores, groups, strict=True)]

    def to_dict(self) -> dict:
        """{"threshold": t, "per_group": {group: t}}: the form recorded in manifests and metrics.json."""
        return {"threshold": self.threshold, "per_group": dict(self.per_group)}

    def save(self, path: str | Path, details: dict | None = None) -> Path:
        """Write thresholds.json: the thresholds plus `details` (how they were chosen)."""
        path = Path(path)
        runs.write_json(path, {**self.to_dict(), **(details or {})})
        return path


def load_thresholds(path: str | Path | None, default: float = DEFAULT_THRESHOLD) -> Thresholds:
    """The thresholds in `path` (a thresholds.json), or the single `default` when no path is given."""
    if not path:
        return Thresholds(threshold=default)
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"thresholds file {path} not found; `hatelens calibrate RUN` writes one")
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected an object with 'threshold' (and optionally 'per_group'), "
                          f"got a {type(values).__name__}; `hatelens calibrate RUN` writes one")
    per_group = values.get("per_group") or {}
    if not isinstance(per_group, dict):
        raise ConfigError(f"{path}: 'per_group' must map group names to thresholds, got {per_group!r}")
    _check_value(values.get("threshold"), "threshold", path)
    for group, value in per_group.items():
        _check_value(value, f"per_group.{group}", path)
    return Thresholds(threshold=float(values["threshold"]),
                      per_group={str(group): float(value) for group, value in per_group.items()})


def _check_value(value, key: str, where) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} is {value!r}; give a number between 0 and 1")
    if not 0.0 <= value <= ABOVE_ANY_SCORE:  # also refuses NaN
        raise ConfigError(f"{where}: {key} is {value!r}; give a number between 0 and 1")
