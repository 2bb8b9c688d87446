"""Functional test suites: HateCheck-style cases built from templates, and accuracy per functionality.

A suite is a YAML file of identities (how each group is named) and functionalities (a gold label and
templates with an {identity} slot, or fixed cases per group). `build_suite` turns it into a
HateCheck CSV (case_id, functionality, test_case, label_gold, target_ident) that
`hatelens evaluate --format hatecheck` reads; `per_functionality` then scores each functionality.
"""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hatelens import resources
from hatelens.config import read_yaml
from hatelens.errors import ConfigError
from hatelens.runs import write_atomic

SUITE_TEMPLATES = Path("suites/functional/templates.yaml")  # the shipped suite (resources: from any folder)
SUITE_CSV = Path("suites/functional/hatelens_functional.csv")
CSV_COLUMNS = ("case_id", "functionality", "test_case", "label_gold", "target_ident")
GOLD_LABELS = ("hateful", "non-hateful")
SLOT = "{identity}"


@dataclass(frozen=True)
class Case:
    """One test case: a row of the suite CSV."""

    case_id: str
    functionality: str
    test_case: str
    label_gold: str  # hateful | non-hateful
    target_ident: str  # the group


def build_suite(templates_path: str | Path = SUITE_TEMPLATES) -> list[Case]:
    """Every case of a suite YAML, in file order: functionality, then group, then template, then identity."""
    path = resources.find("suites", templates_path)
    spec = read_yaml(path)
    identities = _identities(spec, path)
    functionalities = spec.get("functionalities")
    if not isinstance(functionalities, dict) or not functionalities:
        raise ConfigError(f"{path}: needs a 'functionalities' mapping of name -> label, templates and/or cases")
    cases = []
    for name, entry in functionalities.items():
        where = f"{path}: functionality {name}"
        label = _gold_label(entry, where)
        texts_by_group = _texts_by_group(entry, identities, where)
        for group, texts in texts_by_group.items():
            for number, text in enumerate(texts, start=1):
                cases.append(Case(f"{name}-{group}-{number:02d}", name, text, label, group))
    return cases


def write_suite(cases: list[Case], csv_path: str | Path = SUITE_CSV) -> Path:
    """Write the cases as a HateCheck CSV; the file appears whole or not at all."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in cases:
        writer.writerow([case.case_id, case.functionality, case.test_case, case.label_gold, case.target_ident])
    write_atomic(Path(csv_path), buffer.getvalue())
    return Path(csv_path)


def per_functionality(rows: list[dict]) -> dict[str, dict]:
    """Accuracy per functionality of prediction rows whose extra holds a "functionality".

    {functionality: {"label", "n", "n_correct", "accuracy", "per_group": {group: accuracy}}}; an
    invalid answer (prediction None) counts as wrong. Empty when no row names a functionality.
    """
    rows_by_functionality: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        functionality = (row.get("extra") or {}).get("functionality")
        if functionality:
            rows_by_functionality[functionality].append(row)
    result = {}
    for functionality, members in sorted(rows_by_functionality.items()):
        by_group: dict[str, list[bool]] = defaultdict(list)
        for row in members:
            by_group[row["group"]].append(row["prediction"] == row["label"])
        correct = sum(sum(flags) for flags in by_group.values())
        result[functionality] = {
            "label": "/".join(sorted({row["label"] for row in members})),
            "n": len(members),
            "n_correct": correct,
            "accuracy": correct / len(members),
            "per_group": {group: sum(flags) / len(flags) for group, flags in sorted(by_group.items())},
        }
    return result


def format_functionality(results: dict[str, dict]) -> str:
    """The per-functionality table a person reads (appended to summary.txt)."""
    groups = sorted({group for entry in results.values() for group in entry["per_group"]})
    lines = [f"{'Functionality':<22}{'label':>8}{'n':>5}{'accuracy':>10}" + "".join(f"{group:>13}" for group in groups)]
    for name, entry in results.items():
        cells = "".join(f"{entry['per_group'][group]:>13.3f}" if group in entry["per_group"] else f"{'':>13}"
                        for group in groups)
        lines.append(f"{name:<22}{entry['label']:>8}{entry['n']:>5}{entry['accuracy']:>10.3f}{cells}")
    return "\n".join(lines) + "\n"


def _identities(spec: dict, path: Path) -> dict[str, list[str]]:
    identities = spec.get("identities")
    if not isinstance(identities, dict) or not identities:
        raise ConfigError(f"{path}: needs an 'identities' mapping of group -> list of names")
    for group, names in identities.items():
        if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
            raise ConfigError(f"{path}: identities.{group} must be a non-empty list of names")
    return identities


def _gold_label(entry: object, where: str) -> str:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with label, description and templates or cases")
    label = entry.get("label")
    if label not in GOLD_LABELS:
        raise ConfigError(f"{where}: label {label!r} must be one of {', '.join(GOLD_LABELS)}")
    return label


def _texts_by_group(entry: dict, identities: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    """Texts per group: each template filled with each of the group's names, then the fixed cases."""
    templates, fixed = entry.get("templates") or [], entry.get("cases") or {}
    if not templates and not fixed:
        raise ConfigError(f"{where}: give 'templates' (with {SLOT}) or 'cases' (per group)")
    for template in templates:
        if not isinstance(template, str) or SLOT not in template:
            raise ConfigError(f"{where}: template {template!r} has no {SLOT} slot; put it in 'cases' instead")
    unknown = sorted(set(fixed) - set(identities))
    if unknown:
        raise ConfigError(f"{where}: cases for unknown group(s) {', '.join(unknown)}; "
                          f"groups are those under identities: {', '.join(identities)}")
    texts_by_group = {}
    for group, names in identities.items():
        texts = [_fill(template, name) for template in templates for name in names]
        texts += list(fixed.get(group) or [])
        if texts:
            texts_by_group[group] = texts
    return texts_by_group


def _fill(template: str, name: str) -> str:
    """Put a group name in the slot; capitalised when it opens the sentence."""
    text = template.replace(SLOT, name)
    return text[0].upper() + text[1:] if template.startswith(SLOT) else text
