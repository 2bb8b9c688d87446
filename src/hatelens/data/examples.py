"""Load and check dataset files into Examples; write them back; hash them.

Supported files (format from the suffix unless `format=` names one):

- `.json`   one array of records: text, label_binary (or label), target_group_norm (or group /
            target_group), source_dataset, original_id; the unified HateXplain + ToxiGen splits.
- `.jsonl`  one object per line: {"text", "label", "group"?, "id"?}, or a chat record
            {"messages": [...]} whose last user turn is the text and last assistant turn the label
            (a bare label word or {"classification": "hate"}).
- `.csv`    columns text, label, group; pick others with text_column= / label_column= / group_column=.
- `hatecheck`  a HateCheck CSV: functionality, test_case, label_gold (hateful / non-hateful),
            target_ident.

A bad record raises a one-line DataError naming file:line (JSON arrays: file[index]), the bad value
and the fix. Duplicate texts and texts carrying both labels come back as warnings.
"""

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hatelens.data.formats import (
    Columns,
    Record,
    columns_for,
    either,
    format_of,
    names_of,
    preview,
    preview_repr,
    read_records,
)
from hatelens.data.labels import _SPELLINGS, HATE, NORMAL, normalize_label
from hatelens.data.texts import character_problem
from hatelens.errors import ConfigError, DataError
from hatelens.files import replace_together

logger = logging.getLogger(__name__)

UNKNOWN_GROUP = "unknown"
SOURCE_FIELDS = ("source", "source_dataset")
FINE_LABEL_FIELDS = ("label_fine", "label_multiclass")  # the source's finer label, kept in Example.extra["fine_label"]
ID_FIELDS = ("id", "case_id")

# Other spellings of the same group. Different groups (latino, arab, muslim, ...) keep their names.
GROUP_SPELLINGS = {
    "lgbt": "lgbtq",
    "lgbtq+": "lgbtq",
    "homosexual": "lgbtq",
    "gay": "lgbtq",
    "gay people": "lgbtq",  # HateCheck's target_ident
    "middle-east": "middle_east",
    "middle east": "middle_east",
    "middle eastern": "middle_east",
    "mexicans": "mexican",
}


@dataclass(frozen=True)
class Example:
    """One labelled text."""

    id: str  # own id (HateCheck: case_id), else "{source_dataset}-{original_id}", else "{file_stem}-{line}"
    text: str
    label: str  # "hate" | "normal"
    group: str  # target group ("lgbtq", "mexican", "middle_east", ...) or "unknown"
    source: str | None = None  # "hatexplain", "toxigen", "hatecheck", ...
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # e.g. HateCheck functionality


@dataclass
class LoadResult:
    """The examples of one file, and what looked wrong without being an error."""

    examples: list[Example]
    warnings: list[str]


def load_examples(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    format: str | None = None,
    skip_empty_texts: bool = False,
) -> LoadResult:
    """Read a dataset file into Examples; raise DataError on the first bad record.

    skip_empty_texts: drop records whose text is empty (with a warning) instead of failing;
    the shared unified_val.json holds one such record.
    """
    path = Path(path)
    file_format = format_of(path, format)
    columns = columns_for(file_format, text_column, label_column, group_column)
    examples, places, skipped = [], [], []
    for record in read_records(path, file_format, columns):
        example = _example(record, columns, path.stem, file_format)
        if example.text.strip():
            examples.append(example)
            places.append(record.where)
        elif skip_empty_texts:
            skipped.append(record.where)
        else:
            raise DataError(
                f"{record.where}: empty text {preview_repr(example.text)}; fill it in, remove the record"
                " or pass --skip-empty-texts"
            )
    if not examples:
        raise DataError(f"{path}: no records in the file; add at least one labelled text")
    _check_unique_ids(examples, places)
    warnings = _duplicate_warnings(path, examples, places)
    if skipped:
        example_place = _short_place(skipped[0], path)
        warnings.insert(0, f"{path}: records skipped for empty text: {len(skipped)}, e.g. {example_place}")
    logger.debug("loaded %d examples from %s", len(examples), path)
    return LoadResult(examples=examples, warnings=warnings)


def _example(record: Record, columns: Columns, stem: str, file_format: str) -> Example:
    values = record.values
    if "messages" in values:
        text, label_value = _chat_turns(values["messages"], record.where)
    else:
        text = _text(values[_field(values, columns.text, "text", record.where)], record.where)
        label_value = values[_field(values, columns.label, "label", record.where)]
    if columns.group_required:
        group = values[_field(values, columns.group, "group", record.where)]
    else:
        group = _first_value(values, columns.group)
    source = _first_value(values, SOURCE_FIELDS)
    for role, value in (("group", group), ("source", source), ("id", _first_value(values, ID_FIELDS))):
        _check_characters(value, role, record.where)
    if file_format == "hatecheck":
        source = source or "hatecheck"
    return Example(
        id=_record_id(values, f"{stem}-{record.number}"),
        text=text,
        label=_label(label_value, record.where),
        group=normalize_group(group),
        source=source,
        extra=_extra(values, file_format),
    )


def _extra(values: dict, file_format: str) -> dict:
    """HateCheck's functionality; the source's finer label (HateXplain's hatespeech / offensive / normal,
    ToxiGen's toxic_implicit / benign_implicit) where the record has one."""
    extra = {"functionality": values.get("functionality")} if file_format == "hatecheck" else {}
    fine = _first_value(values, FINE_LABEL_FIELDS)
    if fine is not None:
        extra["fine_label"] = fine
    return extra


def _field(values: dict, names: tuple[str, ...], role: str, where: str) -> str:
    for name in names:
        if name in values:
            return name
    raise DataError(
        f"{where}: missing field {either(names)} (fields present: {names_of(values)});"
        f" rename the field or pass --{role}-column NAME"
    )


def _first_value(values: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = values.get(name)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: text must be a string, found {preview(value)}; quote it")
    _check_characters(value, "text", where)
    return value


def _check_characters(value: object, role: str, where: str) -> None:
    problem = character_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise DataError(f"{where}: {role} holds {problem}; remove or replace it (a broken export? re-save as UTF-8)")


def _label(value: object, where: str) -> str:
    if isinstance(value, bool):
        raise DataError(f"{where}: label {preview(value)} is a boolean, not a class; write \"hate\" or \"normal\"")
    label = normalize_label(value)
    if label is None:
        accepted = ", ".join(sorted(set().union(*_SPELLINGS.values())))
        raise DataError(f"{where}: unknown label {preview_repr(value)}; use one of the accepted spellings: {accepted}")
    return label


def _chat_turns(messages: object, where: str) -> tuple[str, object]:
    """(last user turn, label word of the last assistant turn) of a chat record."""
    if not isinstance(messages, list) or not all(isinstance(turn, dict) for turn in messages):
        raise DataError(f"{where}: 'messages' must be a list of {{\"role\", \"content\"}} objects")
    contents = {}
    for role in ("user", "assistant"):
        turns = [turn for turn in messages if turn.get("role") == role]
        if not turns:
            raise DataError(f"{where}: chat record has no {role} turn; add the {'text' if role == 'user' else 'label'}")
        contents[role] = _text(turns[-1].get("content"), where)
    return contents["user"], _answer_label(contents["assistant"], where)


def _answer_label(answer: str, where: str) -> object:
    """A bare label word, or the `classification` of a JSON answer."""
    if not answer.strip().startswith("{"):
        return answer
    try:
        parsed = json.loads(answer)
    except (ValueError, RecursionError):  # bad syntax, absurd nesting, an over-long integer
        raise DataError(
            f"{where}: assistant answer {preview_repr(answer)} is not valid JSON; write a label word or valid JSON"
        ) from None
    if not isinstance(parsed, dict) or "classification" not in parsed:
        raise DataError(
            f"{where}: assistant answer {preview_repr(answer)} has no 'classification' field;"
            ' write {"classification": "hate"} or a bare label word'
        )
    return parsed["classification"]


def _record_id(values: dict, fallback: str) -> str:
    own_id = _first_value(values, ID_FIELDS)
    if own_id is not None:
        return own_id
    source, original_id = _first_value(values, ("source_dataset",)), _first_value(values, ("original_id",))
    if source is not None and original_id is not None:
        return f"{source}-{original_id}"
    return fallback


def normalize_group(value: object) -> str:
    """Lower-case a group name and merge spellings of the same group ("LGBTQ+" -> "lgbtq")."""
    if value is None or not str(value).strip():
        return UNKNOWN_GROUP
    name = " ".join(str(value).lower().split())
    return GROUP_SPELLINGS.get(name, name)


def normalize_text(text: str) -> str:
    """The form used to find the same text twice: stripped, lower-case, single spaces."""
    return " ".join(text.lower().split())


def _check_unique_ids(examples: list[Example], places: list[str]) -> None:
    first_place: dict[str, str] = {}
    for example, place in zip(examples, places):
        if example.id in first_place:
            raise DataError(
                f"{place}: duplicate id {example.id!r} (first at {first_place[example.id]});"
                " give every record its own id"
            )
        first_place[example.id] = place


def _duplicate_warnings(path: Path, examples: list[Example], places: list[str]) -> list[str]:
    """One warning for texts that appear more than once, one for texts that carry both labels."""
    rows_by_text: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        rows_by_text[normalize_text(example.text)].append(index)
    repeated = [rows for rows in rows_by_text.values() if len(rows) > 1]
    conflicting = [rows for rows in repeated if len({examples[row].label for row in rows}) > 1]
    short = [_short_place(place, path) for place in places]
    warnings = []
    if repeated:
        first, second = repeated[0][:2]
        warnings.append(
            f"{path}: duplicate texts: {len(repeated)} ({sum(len(rows) - 1 for rows in repeated)} extra rows),"
            f" e.g. {short[first]} and {short[second]}; drop copies that should not count twice"
        )
    if conflicting:
        hate = next(row for row in conflicting[0] if examples[row].label == HATE)
        normal = next(row for row in conflicting[0] if examples[row].label == NORMAL)
        warnings.append(
            f"{path}: texts with both labels: {len(conflicting)},"
            f" e.g. {short[normal]} (normal) and {short[hate]} (hate); fix the label or drop one"
        )
    return warnings


def _short_place(place: str, path: Path) -> str:
    """"file:12" -> "line 12"; "file[3]" -> "[3]"."""
    rest = place.removeprefix(str(path))
    return f"line {rest[1:]}" if rest.startswith(":") else rest


def write_jsonl(examples: Sequence[Example], path: str | Path) -> None:
    """Write {"id", "text", "label", "group", "source", "label_fine"?} per line; the file appears whole or not
    at all."""
    write_jsonl_files({Path(path): examples})


def write_jsonl_files(files: dict[Path, Sequence[Example]]) -> None:
    """Write several JSONL files together: every file is encoded first (a lone surrogate fails here) and
    none is replaced until all are written, so a bad example or a full disk leaves none half-made."""
    encoded = {Path(path): _jsonl_bytes(examples) for path, examples in files.items()}
    try:
        replace_together(encoded)
    except OSError as error:
        raise ConfigError(f"{error.filename}: cannot write ({error.strerror}); "
                          "pass an output folder you can write to") from None


def _jsonl_bytes(examples: Sequence[Example]) -> bytes:
    lines = []
    for example in examples:
        record = {"id": example.id, "text": example.text, "label": example.label, "group": example.group}
        record["source"] = example.source
        if example.extra.get("fine_label"):
            record["label_fine"] = example.extra["fine_label"]
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def examples_hash(examples: Sequence[Example]) -> str:
    """Hex sha256 over (id, text, label, group) of each example, in order."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.id, example.text, example.label, example.group], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
