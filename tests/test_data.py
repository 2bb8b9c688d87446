"""Dataset loading, checks, samples and splits, on real files in tmp_path."""

import csv
import json
from pathlib import Path

import pytest
from fixtures import raises_data_error, write_file

from hatelens.data import (
    Example,
    load_examples,
    normalize_group,
)
from hatelens.errors import ConfigError


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


# ---- errors ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    with raises_data_error(f"{path}: file not found; check the path"):
        load_examples(path)


def test_non_utf8_bytes_name_line_and_offset(tmp_path):
    first = b'{"text": "fine", "label": "hate"}\n'
    path = write_file(tmp_path, "latin1.jsonl", first + b'{"text": "caf\xe9", "label": "normal"}\n')
    offset = len(first) + len(b'{"text": "caf')
    with raises_data_error(f"{path}:2: byte 0xe9 at offset {offset} is not UTF-8; re-save the file as UTF-8"):
        load_examples(path)


def test_broken_jsonl_line(tmp_path):
    path = write_file(tmp_path, "broken.jsonl", jsonl({"text": "a", "label": "hate"}) + '{"text": "b", "label": }\n')
    with raises_data_error(f"{path}:2: not valid JSON (Expecting value, column 24); each line must be one JSON object"):
        load_examples(path)


def test_broken_json_array(tmp_path):
    path = write_file(tmp_path, "broken.json", '[\n  {"text": "a", "label": "hate"},\n  {"text": "b",, }\n]\n')
    with raises_data_error(f"{path}:3: not valid JSON"):
        load_examples(path)


def test_json_that_is_not_an_array(tmp_path):
    path = write_file(tmp_path, "object.json", json.dumps({"text": "a", "label": "hate"}))
    with raises_data_error(f"{path}: expected a JSON array of records, found {{"):
        load_examples(path)


def test_json_array_item_that_is_not_an_object(tmp_path):
    path = write_file(tmp_path, "strings.json", json.dumps([{"text": "a", "label": "hate"}, "b"]))
    with raises_data_error(f'{path}[1]: expected a JSON object with text and label, found "b"'):
        load_examples(path)


def test_missing_field_names_the_field_and_the_fields_present(tmp_path):
    path = write_file(tmp_path, "typo.jsonl", jsonl({"txt": "a", "label": "hate"}))
    with raises_data_error(f"{path}:1: missing field 'text' (fields present: txt, label); rename the field or pass --text-column"):
        load_examples(path)


def test_missing_label_in_json_array_names_the_index(tmp_path):
    path = write_file(tmp_path, "nolabel.json", json.dumps([{"text": "a", "label": "hate"}, {"text": "b"}]))
    with raises_data_error(f"{path}[1]: missing field 'label_binary' or 'label' (fields present: text)"):
        load_examples(path)


def test_missing_csv_column_mentions_the_flag(tmp_path):
    path = write_file(tmp_path, "posts.csv", "content,label\nhello,normal\n")
    with raises_data_error(f"{path}:1: no text column 'text' (columns: content, label); pass --text-column NAME"):
        load_examples(path)


def test_named_group_column_must_exist(tmp_path):
    path = write_file(tmp_path, "posts.csv", "text,label\nhello,normal\n")
    with raises_data_error(f"{path}:1: no group column 'community' (columns: text, label); pass --group-column NAME"):
        load_examples(path, group_column="community")


def test_unknown_label_lists_the_accepted_spellings(tmp_path):
    path = write_file(tmp_path, "labels.csv", "text,label\nhello,normal\nhi,maybe\n")
    with raises_data_error(f"{path}:3: unknown label 'maybe'; use one of the accepted spellings: 0, 1, hate,") as error:
        load_examples(path)
    assert "hateful" in str(error.value) and "non-hateful" in str(error.value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(tmp_path, text):
    path = write_file(tmp_path, "empty.jsonl", jsonl({"text": "a", "label": "hate"}, {"text": text, "label": "normal"}))
    with raises_data_error(f"{path}:2: empty text {text!r}; fill it in, remove the record or pass --skip-empty-texts"):
        load_examples(path)


def test_empty_texts_can_be_skipped_with_a_warning(tmp_path):
    records = [{"text": "a", "label": "hate"}, {"text": " ", "label": "normal"}, {"text": "b", "label": "normal"}]
    path = write_file(tmp_path, "empty.json", json.dumps(records))
    result = load_examples(path, skip_empty_texts=True)
    assert [example.text for example in result.examples] == ["a", "b"]
    assert result.warnings == [f"{path}: records skipped for empty text: 1, e.g. [1]"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("empty.json", "[]"),
        ("header.csv", "text,label\n"),
        ("empty.csv", ""),
    ],
)
def test_file_without_records(tmp_path, name, content):
    path = write_file(tmp_path, name, content)
    with raises_data_error(f"{path}: no records in the file; add at least one labelled text"):
        load_examples(path)


def test_duplicate_explicit_id(tmp_path):
    path = write_file(tmp_path, "ids.jsonl", jsonl(*({"id": "a", "text": text, "label": "hate"} for text in ("x", "y"))))
    with raises_data_error(f"{path}:2: duplicate id 'a' (first at {path}:1); give every record its own id"):
        load_examples(path)


def test_duplicate_source_id_in_unified_json(tmp_path):
    record = {"text": "x", "label_binary": "hate", "source_dataset": "toxigen", "original_id": "toxigen_7"}
    path = write_file(tmp_path, "unified.json", json.dumps([record, dict(record, text="y")]))
    with raises_data_error(f"{path}[1]: duplicate id 'toxigen-toxigen_7' (first at {path}[0])"):
        load_examples(path)


def test_unknown_suffix_and_unknown_format(tmp_path):
    path = write_file(tmp_path, "posts.txt", "hello\n")
    with raises_data_error(f"{path}: cannot tell the format from the suffix '.txt'; rename it to .json, .jsonl or .csv or pass"):
        load_examples(path)
    with pytest.raises(ConfigError, match="^unknown data format 'tsv'; choose one of json, jsonl, csv, hatecheck$"):
        load_examples(path, format="tsv")


# ---- formats --------------------------------------------------------------------------------------

SPELLINGS = [
    ("hate", "hate"), ("hateful", "hate"), ("1", "hate"), (1, "hate"), ("hate_speech", "hate"),
    ("hatespeech", "hate"), ("HATEFUL", "hate"), (" Hate ", "hate"),
    ("normal", "normal"), ("not_hate", "normal"), ("not hate", "normal"), ("non-hateful", "normal"),
    ("non_hateful", "normal"), ("not_hateful", "normal"), ("0", "normal"), (0, "normal"),
    ("Normal", "normal"),
]  # fmt: skip


@pytest.mark.parametrize(("spelling", "label"), SPELLINGS)
def test_label_spellings(tmp_path, spelling, label):
    path = write_file(tmp_path, "labels.jsonl", jsonl({"text": "a", "label": spelling}))
    assert load_examples(path).examples[0].label == label


@pytest.mark.parametrize("value", [True, False])
def test_boolean_labels_are_errors_not_classes(tmp_path, value):
    path = write_file(tmp_path, "labels.jsonl", jsonl({"text": "a", "label": value}))
    with raises_data_error(f"{path}:1: label {json.dumps(value)} is a boolean, not a class; write \"hate\" or \"normal\""):
        load_examples(path)


def test_unified_json(tmp_path):
    records = [
        {"text": "t1", "label_binary": "hate", "target_group_norm": "lgbtq", "source_dataset": "hatexplain",
         "original_id": "1_gab", "persona_tag": "homosexual"},
        {"text": "t2", "label": "normal", "group": "Middle-East"},
        {"text": "t3", "label": "normal", "target_group": "LGBTQ+"},
        {"text": "t4", "label": 1},
    ]  # fmt: skip
    path = write_file(tmp_path, "mixed.json", json.dumps(records))
    assert load_examples(path).examples == [
        Example("hatexplain-1_gab", "t1", "hate", "lgbtq", "hatexplain"),
        Example("mixed-1", "t2", "normal", "middle_east"),
        Example("mixed-2", "t3", "normal", "lgbtq"),
        Example("mixed-3", "t4", "hate", "unknown"),
    ]


def test_plain_jsonl_ids_and_groups(tmp_path):
    content = jsonl({"id": "p1", "text": "a", "label": "hate", "group": "Mexican"}) + "\n"
    content += jsonl({"text": "b", "label": "normal", "target_group_norm": "middle_east", "source": "mine"})
    path = write_file(tmp_path, "posts.jsonl", content)
    assert load_examples(path).examples == [
        Example("p1", "a", "hate", "mexican"),
        Example("posts-3", "b", "normal", "middle_east", "mine"),  # line 3: line 2 is blank
    ]


def chat(user: str, answer: str, **fields) -> dict:
    messages = [
        {"role": "system", "content": "Classify the text."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "normal"},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": messages, **fields}


def test_chat_records(tmp_path):
    path = write_file(
        tmp_path,
        "sft.jsonl",
        jsonl(
            chat("plain answer", "hate", id="c1", group="gay"),
            chat("json answer", '{"classification": "normal"}'),
            chat("spaced answer", " Hateful\n"),
        ),
    )
    assert load_examples(path).examples == [
        Example("c1", "plain answer", "hate", "lgbtq"),
        Example("sft-2", "json answer", "normal", "unknown"),
        Example("sft-3", "spaced answer", "hate", "unknown"),
    ]


def test_chat_record_errors(tmp_path):
    path = write_file(tmp_path, "no_answer.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"}]}))
    with raises_data_error(f"{path}:1: chat record has no assistant turn; add the label"):
        load_examples(path)
    path = write_file(tmp_path, "bad_json.jsonl", jsonl(chat("hi", '{"classification": hate}')))
    with raises_data_error(f"""{path}:1: assistant answer '{{"classification": hate}}' is not valid JSON"""):
        load_examples(path)
    path = write_file(tmp_path, "no_key.jsonl", jsonl(chat("hi", '{"answer": "hate"}')))
    with raises_data_error(f"""{path}:1: assistant answer '{{"answer": "hate"}}' has no 'classification' field"""):
        load_examples(path)
    path = write_file(tmp_path, "sentence.jsonl", jsonl(chat("hi", "I think this is hate.")))
    with raises_data_error(f"{path}:1: unknown label 'I think this is hate.'"):
        load_examples(path)


def test_csv_defaults_and_column_flags(tmp_path):
    path = write_file(tmp_path, "default.csv", 'text,label,group\nhello,normal,Arab\n"two\nlines",1,\n')
    assert load_examples(path).examples == [
        Example("default-2", "hello", "normal", "arab"),
        Example("default-4", "two\nlines", "hate", "unknown"),  # a record ends on the line its id names
    ]
    path = write_file(tmp_path, "custom.csv", "post,verdict,community\nhello,hateful,LGBT\n")
    examples = load_examples(path, text_column="post", label_column="verdict", group_column="community").examples
    assert examples == [Example("custom-2", "hello", "hate", "lgbtq")]


def test_csv_with_byte_order_mark(tmp_path):
    path = write_file(tmp_path, "excel.csv", "\ufefftext,label\nhello,normal\n".encode())
    assert load_examples(path).examples == [Example("excel-2", "hello", "normal", "unknown")]


def test_csv_bad_label_names_its_line(tmp_path):
    path = write_file(tmp_path, "lines.csv", 'text,label\n"multi\nline",hate\nbad,3\n')
    with raises_data_error(f"{path}:4: unknown label '3'"):
        load_examples(path)


HATECHECK = [
    ["case_id", "functionality", "test_case", "label_gold", "target_ident"],
    ["1", "derog_neg_emote_h", "I hate gay people.", "hateful", "gay people"],
    ["2", "ident_neutral_nh", "Many Muslims live here.", "non-hateful", "Muslims"],
    ["3", "spell_char_swap_h", "I h8 them all.", "hateful", ""],
]


def write_hatecheck(folder: Path) -> Path:
    path = folder / "hatecheck.csv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(HATECHECK)
    return path


def test_hatecheck_format(tmp_path):
    examples = load_examples(write_hatecheck(tmp_path), format="hatecheck").examples
    assert examples == [
        Example("1", "I hate gay people.", "hate", "lgbtq", "hatecheck"),
        Example("2", "Many Muslims live here.", "normal", "muslims", "hatecheck"),
        Example("3", "I h8 them all.", "hate", "unknown", "hatecheck"),
    ]
    assert [example.extra for example in examples] == [
        {"functionality": "derog_neg_emote_h"},
        {"functionality": "ident_neutral_nh"},
        {"functionality": "spell_char_swap_h"},
    ]


def test_hatecheck_file_loads_as_plain_csv_with_flags(tmp_path):
    path = write_hatecheck(tmp_path)
    plain = load_examples(path, text_column="test_case", label_column="label_gold", group_column="target_ident")
    hatecheck = load_examples(path, format="hatecheck")
    as_tuples = [(example.id, example.text, example.label, example.group) for example in plain.examples]
    assert as_tuples == [(example.id, example.text, example.label, example.group) for example in hatecheck.examples]
    columns = "case_id, functionality, test_case, label_gold, target_ident"
    with raises_data_error(f"{path}:1: no text column 'text' (columns: {columns}); pass --text-column NAME"):
        load_examples(path)


@pytest.mark.parametrize(
    ("given", "group"),
    [
        ("LGBTQ", "lgbtq"), ("lgbtq+", "lgbtq"), ("lgbt", "lgbtq"), ("Homosexual", "lgbtq"), ("gay", "lgbtq"),
        ("middle-east", "middle_east"), ("Middle Eastern", "middle_east"), ("middle_east", "middle_east"),
        ("Mexican", "mexican"), ("latino", "latino"), ("Arab", "arab"), ("muslim", "muslim"),
        (None, "unknown"), ("  ", "unknown"),
    ],
)  # fmt: skip
def test_group_names(given, group):
    assert normalize_group(given) == group


# ---- warnings -------------------------------------------------------------------------------------


def test_duplicate_text_and_conflicting_label_warnings(tmp_path):
    path = write_file(
        tmp_path,
        "dupes.jsonl",
        jsonl(
            {"text": "Same words", "label": "hate"},
            {"text": "other", "label": "normal"},
            {"text": "same  WORDS ", "label": "hate"},
            {"text": "twice", "label": "normal"},
            {"text": "twice", "label": "hate"},
        ),
    )
    result = load_examples(path)
    assert len(result.examples) == 5
    assert result.warnings == [
        f"{path}: duplicate texts: 2 (2 extra rows), e.g. line 1 and line 3; drop copies that should not count twice",
        f"{path}: texts with both labels: 1, e.g. line 4 (normal) and line 5 (hate); fix the label or drop one",
    ]


def test_clean_file_has_no_warnings(tmp_path):
    path = write_file(tmp_path, "clean.jsonl", jsonl({"text": "a", "label": "hate"}, {"text": "b", "label": "normal"}))
    assert load_examples(path).warnings == []


# ---- samples and splits ---------------------------------------------------------------------------
