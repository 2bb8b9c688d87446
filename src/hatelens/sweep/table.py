"""The winner rule and the table of `hatelens sweep` (sweep.py runs the cells)."""

import yaml

from hatelens.errors import ConfigError
from hatelens.report.formatting import num

METRICS = ("f1", "roc_auc", "pr_auc")
GROUP_SHORT = {"lgbtq": "lgbtq", "mexican": "mex", "middle_east": "me"}


def check_rule(rule) -> None:
    if rule.metric not in METRICS:
        raise ConfigError(f"rule.metric {rule.metric!r}: choose one of {', '.join(METRICS)}")
    for name in ("max_group_fpr", "max_group_fnr"):
        if not 0 <= getattr(rule, name) <= 1:
            raise ConfigError(f"rule.{name} must be a rate between 0 and 1, got {getattr(rule, name)}")
    if not rule.groups:
        raise ConfigError("rule.groups: name at least one group whose FPR and FNR are budgeted")


def violations(row: dict, rule) -> list[str]:
    """Each budget the row breaks, as 'lgbtq FNR 0.39 > 0.25'. A group missing from the validation rows,
    or a rate it cannot have (no hate rows: no FNR), is reported, never silently passed."""
    broken = []
    for group in rule.groups:
        rates = row["per_group"].get(group)
        for rate, budget in (("fpr", rule.max_group_fpr), ("fnr", rule.max_group_fnr)):
            value = rates.get(rate) if rates else None
            if value is None:
                broken.append(f"{group} {rate.upper()} undefined (no rows)")
            elif value > budget:
                broken.append(f"{group} {rate.upper()} {value:.3f} > {budget:.2f}")
    return broken


def excess(row: dict, rule) -> float:
    """Total amount by which the row's group rates exceed their budgets (an undefined rate counts 1)."""
    total = 0.0
    for group in rule.groups:
        rates = row["per_group"].get(group) or {}
        for rate, budget in (("fpr", rule.max_group_fpr), ("fnr", rule.max_group_fnr)):
            value = rates.get(rate)
            total += 1.0 if value is None else max(0.0, value - budget)
    return total


def pick_winner(rows: list[dict], rule) -> tuple[dict, bool]:
    """(winner, whether it keeps every budget): the best rule.metric among the rows within budget; when
    none is, the smallest total excess (ties: the better metric)."""
    if not rows:
        raise ConfigError("the sweep has no cells; list cells or a grid in the sweep file")
    metric = rule.metric

    def score(row):
        return row[metric] if row[metric] is not None else float("-inf")

    within = [row for row in rows if not violations(row, rule)]
    if within:
        return max(within, key=score), True
    return min(rows, key=lambda row: (round(excess(row, rule), 6), -score(row))), False


def format_markdown(config, rows: list[dict], winner: dict, rule_met: bool, *, quick: bool) -> str:
    """sweep.md: the rule, one table row per cell, the winner and why."""
    rule = config.rule
    groups = " / ".join(GROUP_SHORT.get(group, group) for group in rule.groups)
    lines = [f"# Sweep `{config.name}`{' (QUICK: one step on 16 rows; the numbers mean nothing)' if quick else ''}",
             "",
             f"Recipe `{config.recipe}`; every cell scored on its recipe's validation split at threshold "
             f"{config.threshold:g}.",
             f"Rule: best {rule.metric} among cells whose every group ({', '.join(rule.groups)}) keeps FPR <= "
             f"{rule.max_group_fpr:.2f} and FNR <= {rule.max_group_fnr:.2f}; if none does, the smallest total "
             "excess over the budgets.",
             "",
             f"| cell | F1 | ROC-AUC | FPR {groups} | FNR {groups} | train min | eval min | budget |",
             "|---|---:|---:|---|---|---:|---:|---|"]
    for row in rows:
        broken = violations(row, rule)
        marker = "**" if row is winner else ""
        lines.append(
            f"| {marker}{row['name']}{marker} | {_number(row['f1'])} | {_number(row['roc_auc'])} | "
            f"{_rates(row, rule.groups, 'fpr')} | {_rates(row, rule.groups, 'fnr')} | {row['train_s'] / 60:.1f} | "
            f"{row['eval_s'] / 60:.1f} | {'ok' if not broken else '; '.join(broken)} |")
    lines.append("")
    if rule_met:
        lines.append(f"Winner: **{winner['name']}** ({rule.metric} {_number(winner[rule.metric])}, every group "
                     "within budget).")
    else:
        lines.append(f"No cell keeps every group within budget. Smallest violation: **{winner['name']}** "
                     f"(excess {excess(winner, rule):.3f}; {'; '.join(violations(winner, rule))}).")
    total_s = sum(row["cell_s"] for row in rows)
    command = " ".join(["hatelens train --config", config.recipe, *as_overrides(winner["overrides"])])
    lines += [f"Train it alone: `{command}`",
              f"Cells: {len(rows)}, {total_s / 60:.1f} min in all "
              "(training + validation scoring, as measured when each cell ran).", ""]
    return "\n".join(lines)


def _number(value) -> str:
    return num(value, missing="-")


def _rates(row: dict, groups: list, rate: str) -> str:
    return " / ".join(_number((row["per_group"].get(group) or {}).get(rate)) for group in groups)


def as_overrides(values: dict, prefix: str = "") -> list[str]:
    """A nested mapping as `key=value` overrides whose values read back as the same YAML values."""
    overrides = []
    for key, value in values.items():
        if isinstance(value, dict):
            overrides += as_overrides(value, f"{prefix}{key}.")
        else:
            overrides.append(f"{prefix}{key}={yaml_value(value)}")
    return overrides


def yaml_value(value) -> str:
    """YAML for one value in flow style (2e-05 as 2.0e-05, which YAML reads back as a number)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
