"""Success criteria of a comparison: each PASS or FAIL with the figure that decided it.

The criteria are data (configs/criteria/default.yaml mirrors `config.CriteriaConfig`, the seed's
defaults). A criterion that cannot be checked at all (no expected baseline F1 was given, no
training summary was passed) is SKIP, with the reason; SKIP never fails a comparison. One whose
figure is missing from the data (a group without rows, a single validation loss) is FAIL: the
requirement was asked for and is not shown to hold.
"""

from pathlib import Path

from hatelens.config import CriteriaConfig, from_dict, load_config, to_dict
from hatelens.errors import ConfigError, DataError
from hatelens.report.formatting import num, signed

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


def load_criteria(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Criteria from a YAML file (default: the seed's, as in configs/criteria/default.yaml) + key=value overrides."""
    return validate_criteria(to_dict(load_config(CriteriaConfig, path, overrides)), where=str(path or "criteria"))


def validate_criteria(values: dict, *, where: str = "criteria") -> dict:
    """A complete, checked criteria mapping (defaults filled in); ConfigError naming a bad value."""
    caps = values.get("group_fpr_max")
    if isinstance(caps, dict):  # a group not named keeps its default cap, as any other key would
        values = {**values, "group_fpr_max": {**CriteriaConfig().group_fpr_max, **caps}}
    criteria = from_dict(CriteriaConfig, values, where=where)
    if criteria.baseline_f1_tolerance < 0:
        raise ConfigError(f"{where}: baseline_f1_tolerance {criteria.baseline_f1_tolerance} must be 0 or more")
    if not 0 < criteria.significance_alpha < 1:
        raise ConfigError(f"{where}: significance_alpha {criteria.significance_alpha} must be between 0 and 1")
    for group, cap in criteria.group_fpr_max.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 <= cap <= 1):
            raise ConfigError(f"{where}: group_fpr_max.{group} is {cap!r}; give an FPR cap between 0 and 1 (or null)")
    return to_dict(criteria)


def evaluate_criteria(criteria: dict, comparison: dict, training_summary: dict | None) -> list[dict]:
    """One {"name", "description", "figure", "target", "status"} per criterion, in a fixed order."""
    criteria = validate_criteria(criteria)
    overall, groups = comparison["overall"], comparison["per_group"]
    results = [_baseline_f1(criteria, overall["f1"]["baseline"])]
    if criteria["finetuned_f1_min"] is not None:
        f1 = overall["f1"]["finetuned"]
        results.append(_result("finetuned_f1", "fine-tuned F1", num(f1), f"≥ {criteria['finetuned_f1_min']:.3f}",
                               f1 is not None and f1 >= criteria["finetuned_f1_min"]))
    if criteria["improvement_f1_min"] is not None:
        results.append(_improvement(criteria, overall["f1"]["delta"], comparison["mcnemar"]["p_value"]))
    for group, cap in criteria["group_fpr_max"].items():
        if cap is None:
            continue
        fpr = groups.get(group, {}).get("fpr", {}).get("finetuned")
        figure = num(fpr) if group in groups else f"no {group} rows"
        results.append(_result(f"fpr_{group}", f"fine-tuned {group} FPR", figure, f"< {cap:.2f}",
                               fpr is not None and fpr < cap))
    if criteria["validation_loss_must_improve"]:
        results.append(_validation_loss(training_summary))
    return results


def passed(results: list[dict]) -> bool:
    """True when no criterion failed (SKIP is not a failure)."""
    return all(result["status"] != FAIL for result in results)


def loss_history(training_summary: dict) -> dict[str, list[tuple[float, float]]]:
    """{"train": [(epoch, loss)], "eval": [(epoch, loss)]} from a training summary.

    Reads either "log_history" (the Hugging Face Trainer's list of logged dicts: "loss" rows are
    training, "eval_loss" rows validation; x is "epoch", else "step") or "epochs" (a list of
    {"epoch", "train_loss", "eval_loss"}). Anything else is a DataError naming these keys.
    """
    if isinstance(training_summary.get("log_history"), list):
        curves: dict[str, list[tuple[float, float]]] = {"train": [], "eval": []}
        for entry in training_summary["log_history"]:
            x = entry.get("epoch", entry.get("step"))
            if x is None:
                continue
            if entry.get("loss") is not None:
                curves["train"].append((float(x), float(entry["loss"])))
            if entry.get("eval_loss") is not None:
                curves["eval"].append((float(x), float(entry["eval_loss"])))
        return curves
    if isinstance(training_summary.get("epochs"), list):
        return {kind: [(float(entry["epoch"]), float(entry[f"{kind}_loss"])) for entry in training_summary["epochs"]
                       if entry.get(f"{kind}_loss") is not None]
                for kind in ("train", "eval")}
    raise DataError("the training summary has neither 'log_history' (Trainer log entries) nor 'epochs' "
                    f"(entries with epoch, train_loss, eval_loss); keys found: {', '.join(training_summary) or 'none'}")


def _baseline_f1(criteria: dict, f1: float | None) -> dict:
    expected, tolerance = criteria["baseline_f1_expected"], criteria["baseline_f1_tolerance"]
    if expected is None:
        return _skip("baseline_f1", "baseline F1 as expected", num(f1), "no expected F1 given")
    return _result("baseline_f1", "baseline F1 as expected", num(f1), f"{expected:.3f} ± {tolerance:.3f}",
                   f1 is not None and abs(f1 - expected) <= tolerance + 1e-12)


def _improvement(criteria: dict, delta: float | None, p_value: float) -> dict:
    minimum, alpha = criteria["improvement_f1_min"], criteria["significance_alpha"]
    figure = f"ΔF1 {signed(delta)}, McNemar p = {p_value:.3g}"
    return _result("improvement", "F1 improvement, significant", figure, f"ΔF1 ≥ {minimum:+.3f} and p < {alpha:g}",
                   delta is not None and delta >= minimum - 1e-12 and p_value < alpha)


def _validation_loss(training_summary: dict | None) -> dict:
    name, description, target = "validation_loss", "validation loss fell during training", "last < first"
    if training_summary is None:
        return _skip(name, description, "n/a", "no training summary given (--training-summary)")
    losses = [loss for _, loss in loss_history(training_summary)["eval"]]
    if len(losses) < 2:
        return _result(name, description, f"{len(losses)} validation loss(es) recorded: nothing to compare", target,
                       False)
    return _result(name, description, f"{losses[0]:.4f} -> {losses[-1]:.4f}", target, losses[-1] < losses[0])


def _result(name: str, description: str, figure: str, target: str, ok: bool) -> dict:
    return {"name": name, "description": description, "figure": figure, "target": target,
            "status": PASS if ok else FAIL}


def _skip(name: str, description: str, figure: str, reason: str) -> dict:
    return {"name": name, "description": description, "figure": figure, "target": reason, "status": SKIP}
