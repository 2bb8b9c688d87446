"""One evaluation as a single JSON file: the seed guide's `--output_file` (baseline_results.json,
finetuned_results.json), for tools that want one file rather than a run folder.

    {"run_dir": ..., "model": ..., "adapter": ..., "template": ..., "data_file": ...,
     "metrics": <metrics.json>, "predictions": [<predictions.jsonl rows, in data order>]}

The run folder stays the record (config, manifest, resumable predictions); this file is a copy of its
results, and `run_dir` leads back to it (`hatelens compare` accepts the file in place of the folder).
"""

from pathlib import Path

from hatelens import runs
from hatelens.config import EvalConfig
from hatelens.errors import ConfigError
from hatelens.evaluation.evaluate import PREDICTIONS, EvalResult, default_name, read_predictions


def check_results_path(path: str | Path) -> Path:
    """The results file's path, checked before any scoring: it must end in .json."""
    path = Path(path)
    if path.suffix != ".json":
        raise ConfigError(f"output file {path}: a results file is JSON; name it *.json (e.g. baseline_results.json)")
    return path


def write_results_file(result: EvalResult, config: EvalConfig, path: str | Path) -> Path:
    """Write `result` (a finished run of `config`) to the JSON file `path`; returns the path."""
    path = check_results_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    predictions = list(read_predictions(result.run_dir / PREDICTIONS).values())
    runs.write_json(path, {
        "run_dir": str(result.run_dir.resolve()),
        "model": config.model.model if config.model.backend != "reference" else default_name(config),
        "adapter": config.model.adapter,
        "template": result.metrics["run"].get("template"),
        "data_file": str(config.data),
        "metrics": result.metrics,
        "predictions": predictions,
    })
    return path
