"""Read a finished evaluation run folder back: its prediction rows, metrics and config.

compare, calibrate and the report all start from run folders; this is the one place that reads them.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from hatelens.errors import DataError
from hatelens.metrics import encode_predictions

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"


@dataclass
class FinishedRun:
    """A run folder whose metrics.json exists (written last, so the run is complete)."""

    run_dir: Path
    rows: list[dict]  # predictions.jsonl, in file order
    metrics: dict
    config: dict

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def data_file(self) -> str:
        return str(self.metrics.get("run", {}).get("data") or self.config.get("data"))

    def arrays(self) -> dict[str, np.ndarray]:
        """y_true, y_pred (an invalid answer counts as the wrong class), invalid, scores (NaN: none), groups."""
        y_true, y_pred, invalid = encode_predictions([row["label"] for row in self.rows],
                                                     [row["prediction"] for row in self.rows])
        scores = np.array([np.nan if row["score"] is None else row["score"] for row in self.rows], dtype=float)
        groups = np.array([row["group"] for row in self.rows], dtype=object)
        return {"y_true": y_true, "y_pred": y_pred, "invalid": invalid, "scores": scores, "groups": groups}


def load_finished_run(run_dir: str | Path) -> FinishedRun:
    """The run at `run_dir`; DataError when it is missing or unfinished."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} not found; pass a folder under runs/ written by `hatelens evaluate`")
    for name in (PREDICTIONS, METRICS):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir} has no {name}: not a finished evaluation run; "
                            "run the same `hatelens evaluate` command again to finish it")
    rows = []
    with open(run_dir / PREDICTIONS, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{run_dir / PREDICTIONS}:{number}: not valid JSON ({error.msg}); "
                                "evaluate again into a new run folder") from None
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
    return FinishedRun(run_dir=run_dir, rows=rows, metrics=metrics, config=config or {})
