"""Sampling, splitting, writing and hashing examples; the unified splits against their data card."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures import raises_data_error, write_file

from hatelens.data import (
    Example,
    examples_hash,
    load_examples,
    split_examples,
    split_stats,
    stratified_sample,
    write_jsonl,
)
from hatelens.errors import ConfigError
from hatelens.files import file_sha256

ROOT = Path(__file__).resolve().parents[1]
UNIFIED_DIRS = (ROOT / "data" / "unified", ROOT.parent / "shared" / "data" / "unified")
UNIFIED = next((folder for folder in UNIFIED_DIRS if (folder / "unified_train.json").is_file()), None)
needs_unified = pytest.mark.skipif(UNIFIED is None, reason="the unified splits are not in data/unified")


def population() -> list[Example]:
    """100 examples: 60 hate/lgbtq, 30 normal/mexican, 10 normal/middle_east, interleaved."""
    strata = [("hate", "lgbtq")] * 6 + [("normal", "mexican")] * 3 + [("normal", "middle_east")]
    return [Example(f"e{index}", f"text {index}", *strata[index % 10]) for index in range(100)]


def test_stratified_sample_is_proportional_ordered_and_seeded():
    examples = population()
    sample = stratified_sample(examples, 10, seed=3)
    assert Counter((example.label, example.group) for example in sample) == {
        ("hate", "lgbtq"): 6,
        ("normal", "mexican"): 3,
        ("normal", "middle_east"): 1,
    }
    positions = [examples.index(example) for example in sample]
    assert positions == sorted(positions)
    assert stratified_sample(examples, 10, seed=3) == sample
    assert stratified_sample(examples, 10, seed=4) != sample


def test_stratified_sample_largest_remainder():
    examples = population()
    for n in range(0, 101, 7):
        counts = Counter((example.label, example.group) for example in stratified_sample(examples, n, seed=0))
        assert sum(counts.values()) == n
        for key, size in Counter((example.label, example.group) for example in examples).items():
            assert n * size // 100 <= counts[key] <= -(-n * size // 100)  # floor <= count <= ceil


def test_stratified_sample_bounds():
    examples = population()
    assert stratified_sample(examples, 100, seed=0) == examples
    assert stratified_sample(examples, 500, seed=0) == examples
    assert stratified_sample(examples, 0, seed=0) == []
    with pytest.raises(ConfigError, match="^sample size must be 0 or more, got -1$"):
        stratified_sample(examples, -1, seed=0)


def test_split_examples_small():
    examples = population()
    train, validation = split_examples(examples, validation_fraction=0.15, seed=1)
    assert (len(train), len(validation)) == (85, 15)
    assert sorted(train + validation, key=examples.index) == examples
    # quotas 9, 4.5, 1.5: the remainders tie, so the spare example goes to the first stratum by name
    assert Counter(example.group for example in validation) == {"lgbtq": 9, "mexican": 5, "middle_east": 1}
    assert split_examples(examples, validation_fraction=0.15, seed=1) == (train, validation)
    with pytest.raises(ConfigError, match="^validation_fraction must be between 0 and 1, got 1.5$"):
        split_examples(examples, validation_fraction=1.5, seed=1)


@needs_unified
def test_split_of_unified_train_is_3083_and_545():
    examples = load_examples(UNIFIED / "unified_train.json").examples
    train, validation = split_examples(examples, validation_fraction=545 / 3628, seed=0)
    assert (len(train), len(validation)) == (3083, 545)
    assert {example.id for example in train}.isdisjoint(example.id for example in validation)
    assert split_examples(examples, validation_fraction=545 / 3628, seed=0) == (train, validation)


# ---- files and hashes -----------------------------------------------------------------------------


def test_write_jsonl_round_trip(tmp_path):
    examples = [
        Example("a", 'quotes " and \\ backslash', "hate", "lgbtq", "hatexplain"),
        Example("b", "line\u2028separator and émoji 🙂", "normal", "middle_east", None),
        Example("c", "two\nlines", "normal", "unknown", "toxigen"),
    ]
    path = tmp_path / "data" / "train.jsonl"
    write_jsonl(examples, path)
    assert load_examples(path).examples == examples
    assert json.loads(path.read_text(encoding="utf-8").split("\n")[0]) == {
        "id": "a", "text": 'quotes " and \\ backslash', "label": "hate", "group": "lgbtq", "source": "hatexplain",
    }  # fmt: skip
    assert [file.name for file in path.parent.iterdir()] == ["train.jsonl"]  # no temporary file left


def test_hashes(tmp_path):
    path = write_file(tmp_path, "bytes.bin", b"hatelens")
    assert file_sha256(path) == hashlib.sha256(b"hatelens").hexdigest()
    examples = population()[:3]
    assert examples_hash(examples) == examples_hash(list(examples))
    relabelled = [examples[0], Example("e1", "text 1", "normal", "lgbtq"), examples[2]]
    assert examples_hash(relabelled) != examples_hash(examples)
    assert examples_hash(examples[::-1]) != examples_hash(examples)


def test_split_stats_small():
    train = [Example("t1", "Same text", "hate", "lgbtq", "toxigen"), Example("t2", "other", "normal", "mexican")]
    test = [Example("s1", " same   TEXT", "normal", "lgbtq", "toxigen")]
    stats = split_stats({"train": train, "test": test})
    assert stats["splits"]["train"] == {
        "examples": 2,
        "by_label": {"hate": 1, "normal": 1},
        "by_group": {"lgbtq": 1, "mexican": 1},
        "by_source": {"toxigen": 1, "unknown": 1},
        "by_label_group": {"hate": {"lgbtq": 1}, "normal": {"mexican": 1}},
    }
    assert stats["overlaps"] == [
        {"splits": ["train", "test"], "shared_texts": 1, "ids": [{"train": ["t1"], "test": ["s1"]}]},
    ]


@needs_unified
def test_unified_files_match_the_data_card():
    with raises_data_error(f"{UNIFIED / 'unified_val.json'}[227]: empty text ''"):
        load_examples(UNIFIED / "unified_val.json")
    splits = {
        name: load_examples(UNIFIED / f"unified_{name}.json", skip_empty_texts=True).examples
        for name in ("train", "val", "test")
    }
    stats = split_stats(splits)
    assert stats["splits"]["train"]["by_label"] == {"hate": 1703, "normal": 1925}
    assert stats["splits"]["test"]["by_group"] == {"lgbtq": 494, "mexican": 209, "middle_east": 306}
    assert stats["splits"]["test"]["by_source"] == {"hatexplain": 461, "toxigen": 548}
    shared = {tuple(overlap["splits"]): overlap["shared_texts"] for overlap in stats["overlaps"]}
    assert shared == {("train", "val"): 2, ("train", "test"): 3, ("val", "test"): 1}
    assert all(len(ids) == 2 for overlap in stats["overlaps"] for ids in overlap["ids"])


@needs_unified
def test_unified_train_warnings_match_the_data_card():
    path = UNIFIED / "unified_train.json"
    assert load_examples(path).warnings == [
        f"{path}: duplicate texts: 4 (4 extra rows), e.g. [260] and [1662]; drop copies that should not count twice",
        f"{path}: texts with both labels: 1, e.g. [1168] (normal) and [1849] (hate); fix the label or drop one",
    ]
