"""Read a dataset file into raw records, each with where it was (file:line, or file[index] in a JSON array).

Only syntax is checked here (UTF-8, JSON, CSV header); `hatelens.data` turns records into Examples.
"""

import csv
import io
import json
from contextlib import contextmanager
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
    """The text of a UTF-8 file (a leading BOM dropped); DataError if missing, unreadable or not UTF-8."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} at offset {error.start} is not UTF-8;"
            " re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_bytes(path: Path) -> bytes:
    """The bytes of a file; DataError when it is missing, a folder or unreadable."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the data file inside it")
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}); check its permissions") from None


def iter_jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line of a JSONL text.

    Splits on "\n" only: str.splitlines() would also cut at a U+2028, U+2029 or U+0085 inside a
    JSON string, and JSON writes those characters unescaped.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def loads_line(line: str, where: str) -> object:
    """json.loads of one JSONL line; DataError naming `where` on bad syntax or absurd nesting."""
    try:
        return json.loads(line)
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read; flatten the record") from None
    except ValueError as error:  # JSONDecodeError, or an integer longer than Python converts
        detail = f"{error.msg}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else str(error)
        raise DataError(f"{where}: not valid JSON ({detail}); each line must be one JSON object") from None


def read_records(path: Path, file_format: str, columns: Columns) -> Iterator[Record]:
    """The records of a file in file order."""
    text = read_utf8(path)
    if file_format == "json":
        return _json_records(path, text)
    if file_format == "jsonl":
        return _jsonl_records(path, text)
    return csv_records(path, text, columns)


def parse_json(path: Path, text: str) -> object:
    """json.loads, with a DataError naming file:line on bad syntax or absurd nesting."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read; flatten the records") from None
    except json.JSONDecodeError as error:
        where = f"{path}:{error.lineno}"
        raise DataError(f"{where}: not valid JSON ({error.msg}, column {error.colno}); fix the syntax") from None
    except ValueError as error:  # an integer longer than Python converts
        raise DataError(f"{path}: not valid JSON ({error}); fix the number") from None


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
    for number, line in iter_jsonl_lines(text):
        where = f"{path}:{number}"
        yield Record(where, number, _as_object(loads_line(line, where), where))


def _as_object(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with text and label, found {preview(record)}")
    return record


def csv_records(path: Path, text: str, columns: Columns | None) -> Iterator[Record]:
    """The rows of a CSV text as Records; the header is checked against `columns` unless None."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    with _csv_errors(path, reader):
        header = reader.fieldnames or []  # an empty file has none
    if header and columns is not None:
        _check_header(path, header, columns)
    while True:
        with _csv_errors(path, reader):
            values = next(reader, None)
        if values is None:
            return
        where = f"{path}:{reader.line_num}"
        if None in values or None in values.values():  # DictReader's marks for extra / missing fields
            found = len(header) + len(values.get(None, ())) - list(values.values()).count(None)
            raise DataError(
                f"{where}: {found} fields but the header has {len(header)};"
                " quote fields that hold commas, or fix the row"
            )
        yield Record(where, reader.line_num, values)


@contextmanager
def _csv_errors(path: Path, reader: csv.DictReader) -> Iterator[None]:
    """csv.Error (e.g. a field over csv.field_size_limit()) as a DataError naming the line."""
    try:
        yield
    except csv.Error as error:
        if "field limit" in str(error):
            raise DataError(
                f"{path}:{reader.reader.line_num}: a field is longer than {csv.field_size_limit():,} characters;"
                " posts are far shorter: is a quote left open? close it, or drop the row"
            ) from None
        raise DataError(f"{path}:{reader.reader.line_num}: not valid CSV ({error}); fix the row") from None


def _check_header(path: Path, header: list[str], columns: Columns) -> None:
    required = {"text": columns.text, "label": columns.label}
    if columns.group_required:
        required["group"] = columns.group
    for role, names in required.items():
        if not any(name in header for name in names):
            raise DataError(
                f"{path}:1: no {role} column {either(names)} (columns: {names_of(header)});"
                f" pass --{role}-column NAME to use another column"
            )


def either(names: tuple[str, ...]) -> str:
    """'a' or 'b'"""
    return " or ".join(repr(name) for name in names)


def preview(value: object) -> str:
    """A value as JSON, cut to 60 characters, for error messages (one line, encodable)."""
    return printable(json.dumps(value, ensure_ascii=False)[:60])


def preview_repr(value: object, limit: int = 80) -> str:
    """repr(value) for error messages, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def names_of(keys) -> str:
    """Field or column names, comma-separated, each shown on one line."""
    return ", ".join(printable(str(key)) for key in keys)


def printable(text: str) -> str:
    """`text`, with line breaks, control characters and lone surrogates escaped as in repr()."""
    return text if text.isprintable() else repr(text)[1:-1]
