"""Rebuilding the unified splits from (synthetic) HateXplain and ToxiGen files."""

import csv
import json
from pathlib import Path

import pytest
from fixtures import raises_data_error, write_file

from hatelens.data import Example, load_examples
from hatelens.data.sources import build_unified


def annotator(label: str, *targets: str) -> dict:
    return {"label": label, "annotator_id": 1, "target": list(targets)}


def hatexplain_post(post_id: str, labels: list[str], targets: list[list[str]], rationales=()) -> dict:
    return {
        "post_id": post_id,
        "annotators": [annotator(label, *target) for label, target in zip(labels, targets)],
        "rationales": list(rationales),
        "post_tokens": ["post", post_id, "words"],
    }


def write_sources(folder: Path) -> tuple[Path, Path]:
    homosexual = [["Homosexual"], ["Homosexual", "Women"], ["None"]]
    posts = [
        hatexplain_post("1_gab", ["hatespeech", "hatespeech", "normal"], homosexual, [[0, 1, 0], [0, 1, 1]]),
        hatexplain_post("2_twitter", ["offensive", "normal", "offensive"], [["Arab"], ["Arab"], ["Islam"]]),
        hatexplain_post("3_gab", ["normal", "normal", "normal"], [["Hispanic"], ["Hispanic"], ["None"]]),
        hatexplain_post("4_gab", ["hatespeech", "offensive", "normal"], homosexual),  # no majority label
        hatexplain_post("5_gab", ["hatespeech"] * 3, [["African"], ["African"], ["Homosexual"]]),  # other group
        hatexplain_post("6_gab", ["hatespeech"] * 3, [["Arab", "Homosexual"]] * 3),  # two of our groups
    ]
    for index in range(7, 17):
        posts.append(hatexplain_post(f"{index}_gab", ["normal"] * 3, [["Homosexual"]] * 3))
    hatexplain = folder / "dataset.json"
    hatexplain.write_text(json.dumps({post["post_id"]: post for post in posts}), encoding="utf-8")
    toxigen = folder / "toxigen.csv"
    rows = [["text", "target_group", "prompt_label"]]
    for index in range(20):
        group = ("lgbtq", "mexican", "middle_east", "black")[index % 4]
        rows.append([f"statement {index} about {group}", group, str(index % 2)])
    rows.append(["   ", "lgbtq", "1"])  # empty text: skipped
    with open(toxigen, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return hatexplain, toxigen


def test_build_unified_from_synthetic_sources(tmp_path):
    hatexplain, toxigen = write_sources(tmp_path)
    paths = build_unified(hatexplain, toxigen, tmp_path / "unified", seed=0)
    assert sorted(paths) == ["test", "train", "val"]
    splits = {name: load_examples(path).examples for name, path in paths.items()}
    everything = [example for examples in splits.values() for example in examples]
    assert len(everything) == 13 + 15  # 13 HateXplain posts kept, 15 ToxiGen rows about our groups
    assert {name: len(examples) for name, examples in splits.items()} == {"train": 19, "val": 3, "test": 6}
    assert len({example.id for example in everything}) == len(everything)
    by_id = {example.id: example for example in everything}
    assert by_id["hatexplain-1_gab"] == Example("hatexplain-1_gab", "post 1_gab words", "hate", "lgbtq", "hatexplain")
    assert by_id["hatexplain-2_twitter"].label == "normal"
    assert by_id["hatexplain-2_twitter"].group == "middle_east"
    assert by_id["hatexplain-3_gab"].group == "mexican"
    assert not {"hatexplain-4_gab", "hatexplain-5_gab", "hatexplain-6_gab"} & by_id.keys()
    assert by_id["toxigen-toxigen_1"] == Example(
        "toxigen-toxigen_1", "statement 1 about mexican", "hate", "mexican", "toxigen"
    )
    assert by_id["toxigen-toxigen_0"].label == "normal"
    assert "toxigen-toxigen_3" not in by_id  # black: not one of the three groups
    records = {
        record["original_id"]: record
        for path in paths.values()
        for record in json.loads(path.read_text(encoding="utf-8"))
    }
    assert records["1_gab"] == {
        "text": "post 1_gab words",
        "label_binary": "hate",
        "label_multiclass": "hatespeech",
        "target_group_norm": "lgbtq",
        "persona_tag": "homosexual",
        "source_dataset": "hatexplain",
        "original_id": "1_gab",
        "rationale_text": "1_gab",
        "split": None,
    }
    assert records["toxigen_2"]["label_multiclass"] == "benign_implicit"
    again = build_unified(hatexplain, toxigen, tmp_path / "again", seed=0)
    assert all(again[name].read_bytes() == path.read_bytes() for name, path in paths.items())  # seeded


def test_build_unified_from_annotated_toxigen_folder(tmp_path):
    hatexplain, _ = write_sources(tmp_path)
    folder = tmp_path / "toxigen"
    folder.mkdir()
    rows = [["text", "target_group", "toxicity_human"], ["a", "LGBTQ+ folks", "4.3"], ["b", "mexican folks", "1.0"]]
    with open(folder / "annotated_test.csv", "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    paths = build_unified(hatexplain, folder, tmp_path / "unified", seed=0)
    toxigen = [e for path in paths.values() for e in load_examples(path).examples if e.source == "toxigen"]
    assert sorted((example.text, example.label, example.group) for example in toxigen) == [
        ("a", "hate", "lgbtq"),
        ("b", "normal", "mexican"),
    ]


def test_build_unified_errors(tmp_path):
    hatexplain, toxigen = write_sources(tmp_path)
    bad_csv = write_file(tmp_path, "bad.csv", "sentence,target_group,prompt_label\nhi,lgbtq,1\n")
    with raises_data_error(f"{bad_csv}:1: no column 'text' or 'generation' (columns: sentence, target_group, prompt_label)"):
        build_unified(hatexplain, bad_csv, tmp_path / "out", seed=0)
    bad_label = write_file(tmp_path, "label.csv", "text,target_group,prompt_label\nhi,lgbtq,yes\n")
    with raises_data_error(f"{bad_label}:2: prompt_label 'yes' is not a number"):
        build_unified(hatexplain, bad_label, tmp_path / "out", seed=0)
    no_annotators = write_file(tmp_path, "posts.json", json.dumps({"9_gab": {"post_tokens": ["hi"]}}))
    with raises_data_error(f"{no_annotators}['9_gab']: missing field 'annotators' (fields present: post_tokens)"):
        build_unified(no_annotators, toxigen, tmp_path / "out", seed=0)
    with raises_data_error(f"{tmp_path / 'missing.json'}: file not found"):
        build_unified(tmp_path / "missing.json", toxigen, tmp_path / "out", seed=0)


GOOD_ANNOTATOR = {"label": "hatespeech", "target": ["Homosexual"]}


@pytest.mark.parametrize(("post", "message"), [
    ([1, 2], "a post must be an object, found [1, 2]"),
    ({"post_tokens": ["hi"], "annotators": []}, "'annotators' must be a non-empty list of objects, found []"),
    ({"post_tokens": ["hi"], "annotators": "three"}, "'annotators' must be a non-empty list of objects"),
    ({"post_tokens": [], "annotators": [GOOD_ANNOTATOR]}, "'post_tokens' must be a non-empty list of strings"),
    ({"post_tokens": "hi there", "annotators": [GOOD_ANNOTATOR]}, "'post_tokens' must be a non-empty list"),
    ({"post_tokens": ["hi", 3], "annotators": [GOOD_ANNOTATOR]}, "'post_tokens' must be a non-empty list"),
    ({"post_tokens": ["hi"], "annotators": [{"label": "normal"}]}, "missing field 'target' (fields present: label)"),
    ({"post_tokens": ["hi"], "annotators": [{"label": ["hatespeech"], "target": []}]},
     "annotator 1 needs a string 'label' and a list of strings 'target'"),
    ({"post_tokens": ["hi"], "annotators": [{"label": "normal", "target": "Arab"}]},
     "annotator 1 needs a string 'label' and a list of strings 'target'"),
    ({"post_tokens": ["hi"], "annotators": [GOOD_ANNOTATOR], "rationales": [[2]]},
     "'rationales' must be a list of 0/1 lists, found [[2]]"),
    ({"post_tokens": ["hi\x07"], "annotators": [GOOD_ANNOTATOR]},
     "the post's text holds a control character U+0007 at character 3"),
])  # fmt: skip
def test_malformed_hatexplain_posts_name_the_post(tmp_path, post, message):
    _, toxigen = write_sources(tmp_path)
    posts = write_file(tmp_path, "posts.json", json.dumps({"7_gab": post}))
    with raises_data_error(f"{posts}['7_gab']: {message}"):
        build_unified(posts, toxigen, tmp_path / "out", seed=0)
    assert not (tmp_path / "out").exists()
