"""Read a dataset file into raw records, each with where it was (file:line, or file[index] in a JSON array).

Only syntax is checked here (UTF-8, JSON, CSV header); `hatelens.data` turns records into Examples.
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hatelens.errors import ConfigError, DataError

FORMATS = ("json", "jsonl", "csv", "hatecheck")


@dataclass(frozen=True)
class Columns:
    """Field names tried in order for text, label and group."""

    text: tuple[str, ...] = ("text",)
    label: tuple[str, ...] = ("label_binary", "label")  # the unified JSON says label_binary
    group: tuple[str, ...] = ("target_group_norm", "group", "target_group")
    group_required: bool = False  # a named group column must exist; else a missing group is "unknown"


HATECHECK_COLUMNS = Columns(("test_case",), ("label_gold",), ("target_ident",), group_required=True)


@dataclass(frozen=True)
class Record:
    """One raw record: `where` is "file:line" or "file[index]"; `number` is that line or index."""

    where: str
    number: int
    values: dict


def format_of(path: Path, format: str | None) -> str:
    """The named format, or the one the file suffix says."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"unknown data format {format!r}; choose one of {', '.join(FORMATS)}")
        return format
    suffix = path.suffix.lower().removeprefix(".")
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r};"
            f" rename it to .json, .jsonl or .csv or pass --format ({', '.join(FORMATS)})"
        )
    return suffix


def columns_for(file_format: str, text: str | None, label: str | None, group: str | None) -> Columns:
    """The format's field names, with any column the user named in their place."""
    defaults = HATECHECK_COLUMNS if file_format == "hatecheck" else Columns()
    return Columns(
        text=(text,) if text else defaults.text,
        label=(label,) if label else defaults.label,
        group=(group,) if group else defaults.group,
        group_required=bool(group) or defaults.group_required,
    )


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (a leading BOM dropped); DataError if missing or not UTF-8."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} at offset {error.start} is not UTF-8;"
            " re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_records(path: Path, file_format: str, columns: Columns) -> Iterator[Record]:
    """The records of a file in file order."""
    text = read_utf8(path)
    if file_format == "json":
        return _json_records(path, text)
    if file_format == "jsonl":
        return _jsonl_records(path, text)
    return _csv_records(path, text, columns)


def parse_json(path: Path, text: str) -> object:
    """json.loads, with a DataError naming file:line on bad syntax."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{path}:{error.lineno}"
        raise DataError(f"{where}: not valid JSON ({error.msg}, column {error.colno}); fix the syntax") from None


def _json_records(path: Path, text: str) -> Iterator[Record]:
    records = parse_json(path, text)
    if not isinstance(records, list):
        raise DataError(
            f"{path}: expected a JSON array of records, found {preview(records)};"
            " wrap the records in [ ... ] or write one object per line to a .jsonl file"
        )
    for index, record in enumerate(records):
        yield Record(f"{path}[{index}]", index, _as_object(record, f"{path}[{index}]"))


def _jsonl_records(path: Path, text: str) -> Iterator[Record]:
    # split on "\n" only: str.splitlines would also cut at a U+2028 inside a JSON string
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: not valid JSON ({error.msg}, column {error.colno}); each line must be one JSON object"
            ) from None
        yield Record(where, number, _as_object(record, where))


def _as_object(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with text and label, found {preview(record)}")
    return record


def _csv_records(path: Path, text: str, columns: Columns) -> Iterator[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames:
        _check_header(path, reader.fieldnames, columns)
    for values in reader:
        yield Record(f"{path}:{reader.line_num}", reader.line_num, values)


def _check_header(path: Path, header: list[str], columns: Columns) -> None:
    required = {"text": columns.text, "label": columns.label}
    if columns.group_required:
        required["group"] = columns.group
    for role, names in required.items():
        if not any(name in header for name in names):
            raise DataError(
                f"{path}:1: no {role} column {either(names)} (columns: {', '.join(header)});"
                f" pass --{role}-column NAME to use another column"
            )


def either(names: tuple[str, ...]) -> str:
    """'a' or 'b'"""
    return " or ".join(repr(name) for name in names)


def preview(value: object) -> str:
    """A value as JSON, cut to 60 characters, for error messages."""
    return json.dumps(value, ensure_ascii=False)[:60]
