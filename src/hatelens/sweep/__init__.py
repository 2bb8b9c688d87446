"""`hatelens sweep`: train a list or grid of recipe variants, score each on validation, pick a winner.

    hatelens sweep --config quality          # configs/sweeps/quality.yaml: hours on the 2-core CPU
    hatelens sweep --config quality --quick  # every cell, one step on 16 rows

A sweep file names a base training recipe, overrides for every cell, explicit `cells` and/or a `grid`
(every combination of its axes, crossed with each cell), and the rule that picks the winner. Each
cell trains with `train()` and is scored on its recipe's *validation* split with `evaluate()`: the
test split is never read here, so the choice cannot leak into the final numbers.

<output_dir>/
  cells/<config hash>/train/         a cell's training run (resumed from its last checkpoint)
  cells/<config hash>/validation/    its evaluation run on the validation split
  cells/<config hash>/cell.json      its row of the table, written last: a finished cell is reused by
                                     every sweep that lists the same configuration (run again: resume)
  <name>/sweep.md, sweep.json        the table (rewritten after each cell), the rule, the winner
"""

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hatelens import resources, runs
from hatelens.config import DEFAULT_THRESHOLD, EvalConfig, ModelConfig, TrainConfig, load_config, to_dict
from hatelens.data.labels import GROUPS
from hatelens.errors import ConfigError
from hatelens.sweep.table import as_overrides, check_rule, format_markdown, pick_winner

logger = logging.getLogger(__name__)

CELL_FILE = "cell.json"
# --quick: every cell trains one optimizer step on 16 rows (no warm-up: that step would have rate 0) and is
# scored on 16 validation rows
QUICK_OVERRIDES = {"max_train_samples": 16, "max_val_samples": 16, "epochs": 1, "batch_size": 16, "grad_accum": 1,
                   "warmup_ratio": 0.0, "eval_on_start": False, "early_stopping_patience": None, "save_total_limit": 1}


@dataclass
class SweepRule:
    """How the winner is picked: the best `metric` among cells whose every listed group keeps its FPR and
    FNR within budget; when no cell does, the cell with the smallest total excess over the budgets."""

    metric: str = "f1"  # f1 | roc_auc | pr_auc: what the winner maximises (on validation, at `threshold`)
    max_group_fpr: float = 0.20  # issue 13's budget: no group's normal posts flagged more than 20% of the time
    max_group_fnr: float = 0.25  # ... and no group's hate missed more than 25% of the time
    groups: list = field(default_factory=lambda: list(GROUPS))


@dataclass
class SweepConfig:
    """A sweep file (configs/sweeps/*.yaml)."""

    name: str = "sweep"
    output_dir: str = "runs/sweeps"
    recipe: str = "cpu_small"  # the training recipe every cell starts from: a shipped name or a path
    overrides: dict = field(default_factory=dict)  # applied to every cell (dotted keys: lora.r)
    cells: list = field(default_factory=list)  # [{name?, overrides: {...}}]: explicit variants
    grid: dict = field(default_factory=dict)  # key -> list of values: every combination, crossed with each cell
    threshold: float = DEFAULT_THRESHOLD  # decision threshold of the validation F1 / FPR / FNR
    n_bootstrap: int = 200  # bootstrap resamples of each cell's metrics.json intervals
    rule: SweepRule = field(default_factory=SweepRule)


@dataclass
class Cell:
    name: str
    overrides: dict  # nested mapping merged over the recipe
    config: TrainConfig
    identity: str


@dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict]  # one per cell, in the sweep file's order
    winner: dict
    rule_met: bool  # whether the winner keeps every budget
    markdown: str


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    config = load_config(SweepConfig, path, overrides)
    check_rule(config.rule)
    return config


def run_sweep(config: SweepConfig, *, quick: bool = False, progress: bool = True, workers: int = 1) -> SweepResult:
    """Train and score every cell (finished cells reused), write sweep.md and sweep.json, return them.
    workers > 1: the unfinished cells train side by side in that many processes first."""
    from hatelens.evaluation.evaluate import evaluate
    from hatelens.training.train import train

    cells = plan_cells(config, quick=quick)
    sweep_dir = sweep_folder(config, quick)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    runs.write_yaml(sweep_dir / "sweep.yaml", {**to_dict(config), "quick": quick})
    todo = [cell for cell in cells if not (cells_folder(config) / cell.identity / CELL_FILE).is_file()]
    if workers > 1 and len(todo) > 1:
        from hatelens.sweep.parallel import train_cells

        train_cells(config, todo, [cells_folder(config) / cell.identity for cell in todo], workers)
    rows = []
    for number, cell in enumerate(cells, start=1):
        folder = cells_folder(config) / cell.identity
        if (folder / CELL_FILE).is_file():
            logger.info("cell %d/%d %s: finished earlier, reused", number, len(cells), cell.name)
            row = json.loads((folder / CELL_FILE).read_text())
        else:
            logger.info("cell %d/%d %s: training", number, len(cells), cell.name)
            row = run_cell(config, cell, folder, train, evaluate, progress)
        rows.append({**row, "name": cell.name})  # the name this sweep file gives the configuration
        result = write_table(config, sweep_dir, rows, len(cells), quick)  # a long sweep shows its table as it goes
    return result


def write_table(config: SweepConfig, sweep_dir: Path, rows: list[dict], n_cells: int, quick: bool) -> SweepResult:
    winner, rule_met = pick_winner(rows, config.rule)
    markdown = format_markdown(config, rows, winner, rule_met, quick=quick)
    if len(rows) < n_cells:
        markdown += f"\n(partial: {len(rows)} of {n_cells} cells done; the sweep is still running or was stopped)\n"
    runs.write_atomic(sweep_dir / "sweep.md", markdown)
    runs.write_json(sweep_dir / "sweep.json", {"config": to_dict(config), "quick": quick, "rows": rows,
                                               "cells_planned": n_cells, "winner": winner["name"],
                                               "rule_met": rule_met})
    return SweepResult(sweep_dir=sweep_dir, rows=rows, winner=winner, rule_met=rule_met, markdown=markdown)


def run_cell(config: SweepConfig, cell: Cell, folder: Path, train, evaluate, progress: bool) -> dict:
    """Train (or finish training) one cell, score its adapter on validation, write its cell.json."""
    started = time.perf_counter()
    resume = (folder / "train").is_dir()  # an interrupted attempt: continue from its last checkpoint
    trained = finished_training(folder / "train") or train(cell.config, progress=progress, resume=resume)
    train_config = cell.config
    model = ModelConfig(model=train_config.model, adapter=str(trained.adapter_dir), template=train_config.template,
                        batch_size=train_config.eval_batch_size, device=train_config.device,
                        dtype=train_config.dtype, trust_remote_code=train_config.trust_remote_code)
    eval_config = EvalConfig(data=train_config.val_file, output_dir=str(folder), name="validation",
                             max_samples=train_config.max_val_samples, seed=train_config.seed,
                             threshold=config.threshold, n_bootstrap=config.n_bootstrap, model=model)
    logger.info("cell %s: scoring %s", cell.name, train_config.val_file)
    result = evaluate(eval_config, progress=progress, run_dir=folder / "validation")
    metrics = result.metrics
    row = {
        "name": cell.name, "identity": cell.identity, "overrides": cell.overrides,
        "f1": metrics["f1"], "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"], "n": metrics["n"],
        "per_group": {group: {"fpr": values["fpr"], "fnr": values["fnr"], "n": values["n"]}
                      for group, values in metrics["per_group"].items()},
        "train_s": trained.summary["wall_s"], "eval_s": metrics["run"]["scoring_wall_s"],
        "cell_s": round(time.perf_counter() - started, 1), "n_train": trained.summary["n_train"],
        "train_run": str(trained.run_dir), "validation_run": str(result.run_dir),
    }
    runs.write_json(folder / CELL_FILE, row)
    return row


def sweep_folder(config: SweepConfig, quick: bool) -> Path:
    return Path(config.output_dir) / (f"{config.name}_quick" if quick else config.name)


def cells_folder(config: SweepConfig) -> Path:
    """Shared by every sweep in output_dir: a configuration trained for one sweep is reused by the next."""
    return Path(config.output_dir) / "cells"


def finished_training(container: Path):
    """The TrainResult of a finished training run in `container`, or None."""
    from hatelens.training.train import SUMMARY_FILE, TrainResult

    finished = sorted(container.glob(f"*/{SUMMARY_FILE}")) if container.is_dir() else []
    if not finished:
        return None
    run_dir = finished[-1].parent
    return TrainResult(run_dir=run_dir, adapter_dir=run_dir / "adapter", summary=json.loads(finished[-1].read_text()))


def plan_cells(config: SweepConfig, *, quick: bool = False) -> list[Cell]:
    """Every (cell x grid combination), resolved against the recipe; a cell's identity is a hash of its
    resolved training config (so a finished cell is found again however the sweep file lists it)."""
    resources.find("lora", config.recipe)  # a missing recipe fails here, naming the shipped ones
    explicit = [_cell_entry(entry, index) for index, entry in enumerate(config.cells)] or [(None, {})]
    axes = [[(key, value) for value in _axis(key, values)] for key, values in config.grid.items()]
    planned, seen = [], set()
    for (name, overrides), combination in itertools.product(explicit, itertools.product(*axes)):
        grid_values = _nest(dict(combination))
        merged = _deep_merge(_deep_merge(_nest(config.overrides), overrides), grid_values)
        label = ", ".join(filter(None, [name, *(f"{key}={_short(value)}" for key, value in combination)])) or "recipe"
        forced = {**(QUICK_OVERRIDES if quick else {}), "name": "train"}
        train_config = load_config(TrainConfig, config.recipe, as_overrides(forced), base=merged)
        check_validation_only(train_config, label)
        identity = cell_identity(train_config, config, quick)
        if identity in seen:
            raise ConfigError(f"sweep {config.name}: cell {label!r} repeats another cell's configuration; "
                              "remove one of them")
        seen.add(identity)
        train_config.output_dir = str(cells_folder(config) / identity / "train")
        planned.append(Cell(name=label, overrides=merged, config=train_config, identity=identity))
    return planned


def check_validation_only(config: TrainConfig, cell: str) -> None:
    """A sweep chooses on validation; a test file there would leak the final numbers into the choice."""
    if re.search(r"test", Path(config.val_file).name, re.IGNORECASE):
        raise ConfigError(f"cell {cell!r}: val_file {config.val_file} looks like a test split; a sweep scores "
                          "validation only (data/validation.jsonl): the test split is for the final numbers")


def cell_identity(train_config: TrainConfig, config: SweepConfig, quick: bool) -> str:
    """The cell's folder name: 12 hex digits of its training config and how it is scored."""
    return runs.config_hash(train_config, digits=12, threshold=config.threshold, n_bootstrap=config.n_bootstrap,
                            quick=quick)


def _cell_entry(entry, index: int) -> tuple[str | None, dict]:
    if not isinstance(entry, dict) or set(entry) - {"name", "overrides"}:
        raise ConfigError(f"cells[{index}]: expected a mapping with name and overrides, got {entry!r}")
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"cells[{index}].overrides: expected a mapping of keys to values, got {overrides!r}")
    return entry.get("name"), _nest(overrides)


def _axis(key: str, values) -> list:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
    return values


def _nest(flat: dict) -> dict:
    """{"lora.r": 16, "epochs": 2} -> {"lora": {"r": 16}, "epochs": 2}."""
    nested = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _nest(value) if isinstance(value, dict) else value
    return nested


def _deep_merge(low: dict, high: dict) -> dict:
    merged = dict(low)
    for key, value in high.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def _short(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_short(item)}" for key, item in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)
