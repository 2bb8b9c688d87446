"""The functional suite: built from templates, kept in sync, scored per functionality by evaluate."""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures import LexiconClassifier, make_run

from hatelens.cli import main
from hatelens.data import load_examples
from hatelens.data.suites import SUITE_CSV, SUITE_TEMPLATES, build_suite, write_suite
from hatelens.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"lgbtq", "mexican", "middle_east"}
REQUIRED = {"ident_neutral_nh", "ident_pos_nh", "counter_speech_nh", "quote_denounce_nh", "negation_nh",
            "reclaimed_nh", "hate_plain_h"}


def test_the_shipped_csv_is_what_the_templates_build(tmp_path):
    rebuilt = write_suite(build_suite(ROOT / SUITE_TEMPLATES), tmp_path / "suite.csv")
    assert rebuilt.read_bytes() == (ROOT / SUITE_CSV).read_bytes(), "run `hatelens suite build` after editing"


def test_suite_covers_every_functionality_for_every_group():
    cases = build_suite(ROOT / SUITE_TEMPLATES)
    functionalities = {case.functionality for case in cases}
    assert REQUIRED <= functionalities
    for functionality in functionalities:
        groups = {case.target_ident for case in cases if case.functionality == functionality}
        assert groups == GROUPS, functionality
        labels = {case.label_gold for case in cases if case.functionality == functionality}
        assert labels == {"hateful" if functionality.endswith("_h") else "non-hateful"}
    assert len({case.case_id for case in cases}) == len(cases)
    assert len({case.test_case for case in cases}) == len(cases)


def test_suite_loads_as_a_hatecheck_file_without_warnings():
    loaded = load_examples(ROOT / SUITE_CSV, format="hatecheck")
    assert loaded.warnings == []
    assert {example.group for example in loaded.examples} == GROUPS
    assert Counter(example.label for example in loaded.examples)["hate"] >= 100


def test_evaluate_reports_accuracy_per_functionality(tmp_path):
    run = make_run(ROOT / SUITE_CSV, tmp_path / "runs", LexiconClassifier(), format="hatecheck")
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    with open(ROOT / SUITE_CSV) as file:
        expected_n = Counter(row["functionality"] for row in csv.DictReader(file))
    assert {name: entry["n"] for name, entry in metrics["per_functionality"].items()} == expected_n
    # the lexicon model knows neither "awful" nor "lovely" here: it calls every case normal
    for name, entry in metrics["per_functionality"].items():
        members = [row for row in rows if row["extra"]["functionality"] == name]
        assert entry["accuracy"] == sum(row["prediction"] == row["label"] for row in members) / len(members)
        assert entry["accuracy"] == (0.0 if name.endswith("_h") else 1.0)
        assert set(entry["per_group"]) == GROUPS
    assert "hate_plain_h" in (run / "summary.txt").read_text()


def test_plain_datasets_have_no_per_functionality(tmp_path):
    data = tmp_path / "plain.jsonl"
    data.write_text("".join(json.dumps({"text": f"post {i} awful", "label": "hate", "group": "lgbtq"}) + "\n"
                            for i in range(4)))
    metrics = json.loads((make_run(data, tmp_path / "runs", LexiconClassifier()) / "metrics.json").read_text())
    assert "per_functionality" not in metrics


@pytest.mark.parametrize("functionalities, message", [
    ({"x_h": {"label": "hateful", "templates": ["no slot here"]}}, "template 'no slot here' has no {identity} slot"),
    ({"x_h": {"label": "hate", "templates": ["{identity} x"]}}, "label 'hate' must be one of hateful, non-hateful"),
    ({"x_nh": {"label": "non-hateful", "cases": {"martians": ["hi"]}}}, "cases for unknown group(s) martians"),
    ({"x_nh": {"label": "non-hateful"}}, "give 'templates' (with {identity}) or 'cases' (per group)"),
])
def test_bad_templates_are_config_errors(tmp_path, functionalities, message):
    import yaml

    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump({"identities": {"lgbtq": ["gay people"]}, "functionalities": functionalities}))
    with pytest.raises(ConfigError) as error:
        build_suite(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_suite_build_command(tmp_path, capsys):
    templates = tmp_path / "templates.yaml"
    templates.write_text("identities:\n  lgbtq: [gay people, lesbians]\n  mexican: [Mexicans]\n"
                         "functionalities:\n  ident_pos_nh:\n    label: non-hateful\n    description: positive\n"
                         "    templates: ['{identity} are great.']\n")
    output = tmp_path / "suite.csv"
    assert main(["suite", "build", "--templates", str(templates), "--output", str(output)]) == 0
    assert "3 cases, 1 functionalities" in capsys.readouterr().out
    examples = load_examples(output, format="hatecheck").examples
    assert [example.text for example in examples] == ["Gay people are great.", "Lesbians are great.",
                                                      "Mexicans are great."]
