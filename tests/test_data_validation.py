"""What the dataset readers refuse: characters no model should see, files that are not data,
CSV rows that lose fields, JSON too deep to read, and any bytes at all (property-based)."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatelens.data import load_examples, validate_text
from hatelens.data.formats import iter_jsonl_lines
from hatelens.errors import DataError


def raises(message: str):
    return pytest.raises(DataError, match="^" + re.escape(message))


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ---- validate_text ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    ("fine text", None),
    ("tab\tnew\nline\r\n", None),
    ("line\u2028separator\u2029paragraph\u0085next line", None),  # Unicode line breaks are text
    ("émoji 🙂 and 中文", None),
    ("", "the text is empty"),
    (" \t\n\u2028", "the text is empty"),
    ("ab\ud800", "a lone surrogate U+D800 at character 3 (half of a UTF-16 pair, not valid Unicode text)"),
    ("\udfffx", "a lone surrogate U+DFFF at character 1 (half of a UTF-16 pair, not valid Unicode text)"),
    ("bell\x07", "a control character U+0007 at character 5"),
    ("nul\x00", "a control character U+0000 at character 4"),
    ("del\x7f", "a control character U+007F at character 4"),
    ("c1\x9b", "a control character U+009B at character 3"),
])  # fmt: skip
def test_validate_text(text, reason):
    assert validate_text(text) == reason


# ---- line-safe JSONL ----------------------------------------------------------------------------


def test_unicode_line_breaks_inside_strings_stay_in_one_record(tmp_path):
    texts = ["a\u2028b", "c\u2029d", "e\u0085f"]
    lines = "".join(json.dumps({"text": text, "label": "hate"}, ensure_ascii=False) + "\r\n" for text in texts)
    path = write(tmp_path / "breaks.jsonl", lines)
    assert [example.text for example in load_examples(path).examples] == texts


def test_iter_jsonl_lines_numbers_lines_and_skips_blank_ones():
    assert list(iter_jsonl_lines('{"a": 1}\r\n\n  \n{"b": "x\u2028y"}')) == [(1, '{"a": 1}'), (4, '{"b": "x\u2028y"}')]


# ---- bad characters name file:line --------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "message"), [
    ("text", "ab\ud800", "text holds a lone surrogate U+D800 at character 3"),
    ("text", "bell\x07", "text holds a control character U+0007 at character 5"),
    ("group", "lgbtq\ud800", "group holds a lone surrogate U+D800 at character 6"),
    ("id", "x\x01", "id holds a control character U+0001 at character 2"),
])  # fmt: skip
def test_bad_characters_name_the_line(tmp_path, field, value, message):
    record = {"text": "fine", "label": "hate", field: value}
    path = write(tmp_path / "bad.jsonl", '{"text": "ok", "label": "normal"}\n' + json.dumps(record) + "\n")
    with raises(f"{path}:2: {message}"):
        load_examples(path)


def test_error_messages_stay_on_one_printable_line(tmp_path):
    path = write(tmp_path / "keys.jsonl", json.dumps({"te\nxt\ud800": "a", "label": "hate"}) + "\n")
    with pytest.raises(DataError) as error:
        load_examples(path)
    message = str(error.value)
    assert "\n" not in message and message.encode("utf-8")
    assert r"fields present: te\nxt\ud800, label" in message


# ---- files that are not data --------------------------------------------------------------------


def test_a_folder_given_as_a_file(tmp_path):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with raises(f"{folder}: is a folder; pass the data file inside it"):
        load_examples(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path):
    path = write(tmp_path / "locked.jsonl", '{"text": "a", "label": "hate"}\n')
    path.chmod(0)
    with raises(f"{path}: cannot read the file (Permission denied); check its permissions"):
        load_examples(path)


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_json_nested_too_deep(tmp_path, name):
    path = write(tmp_path / name, "[" * 100_000 + "]" * 100_000)
    with raises(f"{path}{':1' if name.endswith('l') else ''}: JSON nested too deeply to read; flatten the record"):
        load_examples(path)


def test_a_csv_field_over_the_csv_limit(tmp_path):
    path = write(tmp_path / "huge.csv", "text,label\nok,hate\n" + "x" * (csv.field_size_limit() + 1) + ",hate\n")
    with raises(f"{path}:3: a field is longer than {csv.field_size_limit():,} characters;"):
        load_examples(path)


@pytest.mark.parametrize(("row", "found"), [("a,hate,lgbtq,extra", 4), ("a", 1)])
def test_csv_rows_must_have_the_header_s_fields(tmp_path, row, found):
    path = write(tmp_path / "fields.csv", f"text,label,group\nok,hate,lgbtq\n{row}\n")
    with raises(f"{path}:3: {found} fields but the header has 3; quote fields that hold commas, or fix the row"):
        load_examples(path)


# ---- property-based: any input is Examples or a DataError -----------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates and controls too
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["text", "label", "group", "id", "messages", "source", "label_binary", "role", "content"])
LABELS = st.sampled_from(["hate", "normal", "1", "0", "Hateful", "not hate"])
RECORDS = st.dictionaries(FIELDS, JSON_VALUES | LABELS, max_size=5)
FUZZ = settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_or_data_error(path: Path) -> None:
    try:
        result = load_examples(path)
    except DataError as error:
        message = str(error)
        assert message.startswith(str(path)) and "\n" not in message
        message.encode("utf-8")  # printable on any terminal: no lone surrogate in the message
        return
    for example in result.examples:
        assert validate_text(example.text) is None and example.label in ("hate", "normal")


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".jsonl", ".csv"]))
def test_any_bytes(tmp_path, data, suffix):
    load_or_data_error(write(tmp_path / f"fuzz{suffix}", data))


@FUZZ
@given(records=st.lists(RECORDS | JSON_VALUES, min_size=1, max_size=4), ascii=st.booleans())
def test_any_json_lines(tmp_path, records, ascii):
    # ascii: lone surrogates as \ud800 escapes (valid JSON); else as raw bytes (not UTF-8)
    text = "".join(json.dumps(record, ensure_ascii=ascii) + "\n" for record in records)
    load_or_data_error(write(tmp_path / "fuzz.jsonl", text.encode("utf-8", "surrogatepass")))


@FUZZ
@given(records=st.lists(RECORDS, max_size=4))
def test_any_json_array(tmp_path, records):
    load_or_data_error(write(tmp_path / "fuzz.json", json.dumps(records).encode("utf-8")))


# ---- writing splits, reading same-named files ------------------------------------------------------


def test_split_files_are_written_together_or_not_at_all(tmp_path):
    from hatelens.data import Example, write_jsonl_files

    good = [Example(id="a", text="fine", label="hate", group="lgbtq")]
    bad = [Example(id="b", text="half \ud800", label="normal", group="lgbtq")]  # cannot be written as UTF-8
    with pytest.raises(UnicodeEncodeError):
        write_jsonl_files({tmp_path / "train.jsonl": good, tmp_path / "validation.jsonl": bad})
    assert list(tmp_path.iterdir()) == []
    write_jsonl_files({tmp_path / "train.jsonl": good, tmp_path / "validation.jsonl": good})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.jsonl", "validation.jsonl"]


def test_data_stats_keeps_two_files_with_the_same_name(tmp_path, capsys):
    from hatelens.cli import main

    first, second = tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl"
    for path, label in ((first, "hate"), (second, "normal")):
        path.parent.mkdir()
        write(path, json.dumps({"text": f"a {label} post", "label": label}) + "\n")
    assert main(["data", "stats", "--json", str(first), str(second)]) == 0
    splits = json.loads(capsys.readouterr().out)["stats"]["splits"]
    assert {name: counts["by_label"] for name, counts in splits.items()} == {str(first): {"hate": 1},
                                                                            str(second): {"normal": 1}}
