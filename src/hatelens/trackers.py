"""Experiment trackers (`report_to`, TRL's convention): where training curves, evaluation metrics and
comparison verdicts are also sent, besides the run folder.

    report_to: tensorboard            # or mlflow, wandb, none, or a list: [tensorboard, mlflow]

tensorboard writes event files into <run folder>/tensorboard/; mlflow logs to MLFLOW_TRACKING_URI
(default ./mlruns) under the experiment MLFLOW_EXPERIMENT_NAME; wandb to WANDB_PROJECT (default
hatelens), online or offline as WANDB_MODE says. Each is imported only when named.
"""

import os
from pathlib import Path

from hatelens import extras
from hatelens.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb")
OVERALL = ("f1", "precision", "recall", "accuracy", "fpr", "fnr", "roc_auc", "pr_auc", "invalid_rate")
PER_GROUP = ("f1", "fpr", "fnr")


def parse_report_to(value: str | list[str] | None, *, where: str = "report_to") -> list[str]:
    """The trackers named, in order; "none" (or nothing) is []; an unknown name is a ConfigError."""
    names = [value] if isinstance(value, str) else list(value or [])
    names = [name.strip().lower() for name in names if name and name.strip().lower() != "none"]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ConfigError(f"{where}: unknown tracker(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(TRACKERS)} or none")
    return names


def evaluation_figures(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics.json a tracker shows: overall and per group (FPR/FNR/F1)."""
    figures = {f"eval/{name}": metrics[name] for name in OVERALL if isinstance(metrics.get(name), (int, float))}
    for group, row in (metrics.get("per_group") or {}).items():
        figures.update({f"eval/{group}/{name}": row[name] for name in PER_GROUP
                        if isinstance(row.get(name), (int, float))})
    return figures


def comparison_figures(comparison: dict, passed: bool) -> dict[str, float]:
    """A comparison's verdict (1 pass, 0 fail), its F1 delta and each criterion's outcome."""
    figures = {"compare/passed": float(passed)}
    delta = (comparison.get("overall") or {}).get("f1", {}).get("delta")
    if isinstance(delta, (int, float)):
        figures["compare/f1_delta"] = delta
    for criterion in comparison.get("criteria") or []:
        if criterion.get("status") in ("PASS", "FAIL"):
            figures[f"compare/criterion/{criterion['name']}"] = float(criterion["status"] == "PASS")
    return figures


def log(report_to, run_dir: str | Path, name: str, figures: dict[str, float], params: dict | None = None) -> None:
    """Send `figures` (and flat `params`) of one finished step to every tracker named in report_to."""
    for tracker in parse_report_to(report_to):
        {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}[tracker](
            Path(run_dir), name, figures, params or {})


def _tensorboard(run_dir: Path, name: str, figures: dict, params: dict) -> None:
    extras.require("train", "report_to: tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for key, value in figures.items():
            writer.add_scalar(key, value, 0)
        if params:
            writer.add_text("params", "\n".join(f"{key}: {value}" for key, value in params.items()), 0)


def _mlflow(run_dir: Path, name: str, figures: dict, params: dict) -> None:
    extras.require("mlflow", "report_to: mlflow")
    import mlflow

    with mlflow.start_run(run_name=name):
        mlflow.set_tag("hatelens.run_dir", str(run_dir))
        if params:
            mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        mlflow.log_metrics(figures)


def _wandb(run_dir: Path, name: str, figures: dict, params: dict) -> None:
    try:
        import wandb
    except ImportError:
        raise ConfigError("report_to: wandb needs the wandb package: pip install wandb") from None
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "hatelens"), name=name, dir=str(run_dir),
                     config=params)
    run.log(figures)
    run.finish()
