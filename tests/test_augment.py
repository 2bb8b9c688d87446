"""Counterfactual identity swaps, neutral statements and label balance (data/augment.py), and the
training path that applies them (training/records.py)."""

import random
import re
from collections import Counter

import pytest

from hatelens.backends import prompts
from hatelens.config import AugmentConfig
from hatelens.data import Example, augment
from hatelens.training import records


def example(index: int, text: str, label: str = "hate", group: str = "lgbtq") -> Example:
    return Example(id=f"row{index}", text=text, label=label, group=group, source="test")


def test_swap_replaces_each_slot_and_keeps_capitals():
    rng = random.Random(0)
    text = augment.swap_identity("Mexicans ruin mexico, every MEXICAN knows it", "mexican", "middle_east", rng)
    plural, adjective, place = (augment.TERMS["middle_east"][slot] for slot in ("plural", "adjective", "place"))
    words = text.split(" ruin ")
    assert words[0] in {term[:1].upper() + term[1:] for term in plural}
    assert any(words[1].startswith(term + ",") for term in place)
    assert any(text.endswith(f"every {term.upper()} knows it") for term in adjective)


def test_swap_matches_the_longest_term_and_whole_words_only():
    rng = random.Random(0)
    swapped = augment.swap_identity("gay people and a gay bar, not gaylord", "lgbtq", "mexican", rng)
    assert "people" not in swapped  # "gay people" is one plural term
    assert swapped.endswith(", not gaylord")
    assert augment.swap_identity("nothing to see", "lgbtq", "mexican", rng) is None


def test_a_slot_the_target_lacks_is_not_swapped():
    assert augment.swap_identity("go back to mexico", "mexican", "lgbtq", random.Random(0)) is None


def test_counterfactual_copies_keep_the_label_and_move_the_group():
    rows = [example(0, "i hate gays", "hate"), example(1, "gay people are lovely", "normal"),
            example(2, "gays and muslims", "normal"),  # names two groups: not copied
            example(3, "no identity here", "normal"), example(4, "arabs everywhere", "hate", "middle_east")]
    copies = augment.counterfactual_copies(rows, seed=0)
    assert [copy.id for copy in copies] == ["row0~cf-" + copies[0].group, "row1~cf-" + copies[1].group,
                                            "row4~cf-" + copies[2].group]
    assert [copy.label for copy in copies] == ["hate", "normal", "hate"]
    assert copies[0].group != "lgbtq" and copies[2].group != "middle_east"
    for copy in copies:
        assert augment.groups_named(copy.text) == {copy.group}
    assert augment.counterfactual_copies(rows, seed=0) == copies  # seeded


def test_neutral_statements_name_their_group_and_are_normal():
    rows = [example(index, f"the weather is nice today {index}", "normal", "mexican") for index in range(5)]
    made = augment.neutral_statements(rows, 10, seed=0)
    assert Counter(row.group for row in made) == {"lgbtq": 10, "mexican": 10, "middle_east": 10}
    assert {row.label for row in made} == {"normal"}
    for row in made:
        assert row.group in augment.groups_named(row.text)
    introduced = [row for row in made if "the weather is nice today" in row.text]
    assert len(introduced) == 15  # every second statement wraps one of the split's own posts


def test_counter_speech_quotes_each_group_hate_as_normal():
    rows = ([example(index, f"lgbtq hate {index}", "hate") for index in range(3)] +
            [example(10, "mexican hate", "hate", "mexican"), example(11, "a normal post", "normal", "mexican"),
             example(12, 'a "quoted" hate', "hate", "mexican"), example(13, "x" * 201, "hate", "mexican")])
    made = augment.counter_speech(rows, 4, seed=0)
    assert Counter(row.group for row in made) == {"lgbtq": 4, "mexican": 4}  # middle_east has no hateful post
    assert {row.label for row in made} == {"normal"}
    quoted = [re.search(r'"(.*)"', row.text).group(1) for row in made]
    assert set(quoted[:3]) == {"lgbtq hate 0", "lgbtq hate 1", "lgbtq hate 2"}  # distinct while there are enough
    assert set(quoted[4:]) == {"mexican hate"}  # never a normal post, a quote-holding or an over-long one
    assert made == augment.counter_speech(rows, 4, seed=0) != augment.counter_speech(rows, 4, seed=1)


def test_balance_makes_both_labels_equally_frequent_in_each_group():
    rows = ([example(index, f"h{index}", "hate") for index in range(2)] +
            [example(10 + index, f"n{index}", "normal") for index in range(5)] +
            [example(20, "m", "hate", "mexican"), example(21, "m2", "normal", "mexican")])
    repeats = augment.balance_labels_per_group(rows, seed=0)
    assert Counter((row.label, row.group) for row in repeats) == {("hate", "lgbtq"): 3}
    assert len({row.id for row in rows + repeats}) == len(rows) + len(repeats)


def test_augment_drops_additions_that_repeat_a_training_text():
    rows = [example(0, "i hate gays", "hate"), example(1, "i hate queers", "hate")]
    result, counts = augment.augment(rows, counterfactual=True, neutral_per_group=0, balance_labels=False, seed=0)
    texts = [row.text for row in result]
    assert len(texts) == len(set(texts))
    assert result[:2] == rows and counts == {"counterfactual": len(result) - 2}


def test_training_examples_leave_out_shots_and_apply_augmentation(tmp_path):
    path = tmp_path / "shots.yaml"
    path.write_text('name: shots\nuser: "{examples}\\nPost: {text}"\nlabel_words: {hate: " hate", normal: " normal"}\n'
                    'few_shot:\n  - {id: s1, text: "I hate gays", label: hate}\n')
    template = prompts.load_template(str(path))
    rows = [example(0, "i hate gays ", "hate"), example(1, "gay people are lovely", "normal")]
    assert records.training_examples(rows, template, AugmentConfig()) == rows[1:]
    augmented = records.training_examples(rows, template, AugmentConfig(counterfactual=True, neutral_per_group=2))
    assert augmented[0] == rows[1] and len(augmented) == 1 + 1 + 6
    rows.append(example(2, "gays are vermin", "hate"))
    augmented = records.training_examples(rows, template, AugmentConfig(counter_speech_per_group=2))
    assert [row.label for row in augmented[2:]] == ["normal", "normal"]  # only lgbtq has hateful posts


# PEFT reads model.is_gradient_checkpointing, which transformers 5.24 deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_train_with_augmentation_trains_on_the_added_rows(tiny_llama_dir, tmp_path):
    from fixtures import tiny_train_config

    from hatelens.training.train import train

    config = tiny_train_config(tiny_llama_dir, tmp_path, "epochs=1", "eval_on_start=false",
                               "augment.neutral_per_group=2", "augment.balance_labels=true")
    result = train(config, progress=False)
    assert result.summary["n_train"] == 8 + 6 + 6  # 8 rows, 2 neutral per group, their normals balanced by hate


def test_negations_deny_stereotypes_as_normal_and_dignity_as_hate():
    made = augment.negations(4, seed=0)
    assert Counter((row.group, row.label) for row in made) == {
        (group, label): count for group in augment.GROUPS for label, count in (("normal", 4), ("hate", 2))}
    for row in made:
        assert augment.groups_named(row.text) == {row.group}
        assert (" not " in f" {row.text} " or "n't" in row.text or "never" in row.text or "false" in row.text
                or "wrong" in row.text or "know better" in row.text)
    assert made == augment.negations(4, seed=0) != augment.negations(4, seed=1)
    result, counts = augment.augment([], counterfactual=False, neutral_per_group=0, balance_labels=False, seed=0,
                                     negation_per_group=2)
    assert counts == {"negation": len(result)} and len(result) == 3 * 3


def fine(index: int, text: str, label: str, fine_label: str | None, group: str = "lgbtq") -> Example:
    extra = {"fine_label": fine_label} if fine_label else {}
    return Example(id=f"row{index}", text=text, label=label, group=group, source="hatexplain", extra=extra)


def test_fine_label_repeats_copy_the_named_finer_labels_and_their_counterfactual_copies():
    rows = [fine(0, "gay people are fine", "normal", "offensive"), fine(1, "gay people, get out", "hate", "hatespeech"),
            fine(2, "a plain post", "normal", "normal"), fine(3, "another", "normal", None)]
    result, counts = augment.augment(rows, counterfactual=True, neutral_per_group=0, balance_labels=False, seed=0,
                                     fine_repeats={"offensive": 3, "hatespeech": 2})
    texts = Counter(example.text for example in result)
    assert texts["gay people are fine"] == 3 and texts["gay people, get out"] == 2
    assert texts["a plain post"] == 1 and texts["another"] == 1
    swapped = [example for example in result if example.source == augment.AUGMENT_SOURCE and "~fine" not in example.id]
    assert swapped and all(example.extra["fine_label"] in {"offensive", "hatespeech"} for example in swapped)
    # each counterfactual copy is repeated like its original: offensive 2 more, hatespeech 1 more each
    assert counts["fine_label_repeats"] == 2 + 1 + sum(3 - 1 if e.extra["fine_label"] == "offensive" else 1
                                                       for e in swapped)
    repeated = [example for example in result if "~fine" in example.id]
    assert all(example.label == next(r.label for r in rows + swapped if example.id.startswith(r.id + "~fine"))
               for example in repeated)
    assert len({example.id for example in result}) == len(result)  # ids stay unique


def test_fine_label_repeats_need_the_finer_label():
    from hatelens.errors import ConfigError

    with pytest.raises(ConfigError, match="label_fine.*hatelens data split"):
        augment.augment([example(0, "no finer label here")], counterfactual=False, neutral_per_group=0,
                        balance_labels=False, seed=0, fine_repeats={"offensive": 2})
    with pytest.raises(ConfigError, match="names ofensive, a finer label no training post has; .* are offensive"):
        augment.augment([fine(0, "a post", "normal", "offensive")], counterfactual=False, neutral_per_group=0,
                        balance_labels=False, seed=0, fine_repeats={"ofensive": 2})


def test_the_finer_label_travels_from_the_unified_file_through_the_split_jsonl(tmp_path):
    """`hatelens data split` writes the finer label as label_fine; reading it back keeps it; the data hash ignores it."""
    import json

    from hatelens.data import examples_hash, load_examples, write_jsonl

    unified = tmp_path / "unified.json"
    unified.write_text(json.dumps([{"text": "a post", "label_binary": "normal", "label_multiclass": "offensive",
                                    "target_group_norm": "lgbtq", "source_dataset": "hatexplain", "original_id": "7"}]))
    loaded = load_examples(unified).examples
    assert loaded[0].extra["fine_label"] == "offensive"
    write_jsonl(loaded, tmp_path / "train.jsonl")
    assert json.loads((tmp_path / "train.jsonl").read_text())["label_fine"] == "offensive"
    again = load_examples(tmp_path / "train.jsonl").examples
    assert again[0].extra["fine_label"] == "offensive"
    plain = [Example(id=e.id, text=e.text, label=e.label, group=e.group, source=e.source) for e in again]
    assert examples_hash(again) == examples_hash(plain)


def test_the_recipe_option_reaches_the_training_examples():
    rows = [fine(0, "one", "normal", "offensive"), fine(1, "two", "hate", "hatespeech")]
    settings = AugmentConfig(fine_label_repeats={"offensive": 2})
    kept = records.training_examples(rows, prompts.load_template("compact"), settings)
    assert [example.text for example in kept] == ["one", "two", "one"]
