"""Thresholds: how a score becomes a label, and the thresholds.json files that hold them."""

import json
import math

import pytest

from hatelens.errors import ConfigError
from hatelens.evaluation.thresholds import ABOVE_ANY_SCORE, Thresholds, load_thresholds


def test_decide_uses_the_group_threshold_and_leaves_unscored_rows_undecided():
    thresholds = Thresholds(threshold=0.5, per_group={"lgbtq": 0.8})
    labels = thresholds.decide([0.6, 0.6, 0.5, 0.49, None, 0.8], ["lgbtq", "mexican", "mexican", "mexican", "lgbtq",
                                                                   "lgbtq"])
    assert labels == ["normal", "hate", "hate", "normal", None, "hate"]
    assert thresholds.for_group("lgbtq") == 0.8 and thresholds.for_group("unknown") == 0.5


def test_a_threshold_above_every_score_says_nothing_is_hate():
    assert Thresholds(threshold=ABOVE_ANY_SCORE).decide([1.0, 0.0], ["a", "b"]) == ["normal", "normal"]


def test_saved_thresholds_load_back_with_their_details(tmp_path):
    thresholds = Thresholds(threshold=0.42, per_group={"mexican": 0.3})
    path = thresholds.save(tmp_path / "thresholds.json", {"objective": "f1"})
    assert json.loads(path.read_text()) == {"threshold": 0.42, "per_group": {"mexican": 0.3}, "objective": "f1"}
    assert load_thresholds(path) == thresholds


def test_no_file_means_the_single_default():
    assert load_thresholds(None, 0.3) == Thresholds(threshold=0.3, per_group={})


@pytest.mark.parametrize(("contents", "message"), [
    ("[0.5]", "expected an object with 'threshold'"),
    ('{"threshold": "0.5"}', "threshold is '0.5'; give a number between 0 and 1"),
    ('{"threshold": NaN}', "threshold is nan; give a number between 0 and 1"),
    ('{"threshold": 1.5}', "threshold is 1.5; give a number between 0 and 1"),
    ('{"threshold": true}', "threshold is True; give a number between 0 and 1"),
    ('{"per_group": {"lgbtq": 0.5}}', "threshold is None; give a number between 0 and 1"),
    ('{"threshold": 0.5, "per_group": {"lgbtq": -0.1}}', "per_group.lgbtq is -0.1; give a number between 0 and 1"),
    ('{"threshold": 0.5, "per_group": [0.3]}', "'per_group' must map group names to thresholds"),
    ('{"threshold": 0.5,\n', ":2: not valid JSON"),
])
def test_a_bad_thresholds_file_is_a_config_error_naming_it(tmp_path, contents, message):
    path = tmp_path / "thresholds.json"
    path.write_text(contents)
    with pytest.raises(ConfigError) as error:
        load_thresholds(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_a_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(ConfigError, match="not found; `hatelens calibrate RUN` writes one"):
        load_thresholds(tmp_path / "nowhere.json")


def test_thresholds_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="per_group.lgbtq is nan"):
        Thresholds(threshold=0.5, per_group={"lgbtq": math.nan})
