"""Rebuild the unified HateXplain + ToxiGen splits from local copies of the public releases.

    from hatelens.data.sources import build_unified
    build_unified(Path("HateXplain/Data/dataset.json"), Path("toxigen/"), Path("data/unified"), seed=0)

writes unified_train.json, unified_val.json and unified_test.json in the schema of the shared files
(see the data card), restricted to three target groups: lgbtq, mexican, middle_east.

- HateXplain `dataset.json`: {post_id: {"post_tokens", "annotators": [{"label", "target"}], "rationales"}}.
  The label is the annotators' majority (hatespeech -> hate; offensive, normal -> normal); posts with
  no majority are dropped, as HateXplain itself does. The group is the target a majority of
  annotators named; posts whose majority targets are not exactly one of the three groups are dropped.
- ToxiGen CSV (or a folder of them): the annotated release (text, target_group, toxicity_human) or the
  generated one (generation, group, prompt_label). The label is the generation prompt's intent
  (prompt_label == 1 -> hate) when the file has it, else the human rating (toxicity_human > 3 -> hate).

The rebuilt rows will not match the shared files row for row: those came from the earlier project's
own sampling. The `split` field (the row's split in its source dataset) is left null.
"""

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

from hatelens.data import Example, split_examples
from hatelens.data.formats import csv_records, either, names_of, parse_json, preview, read_utf8
from hatelens.data.labels import HATE, NORMAL
from hatelens.data.texts import validate_text
from hatelens.errors import DataError
from hatelens.files import write_atomic

logger = logging.getLogger(__name__)

# Share of all rows in each split; the shared files are about 70 / 10 / 20.
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1

HATEXPLAIN_LABELS = {"hatespeech": HATE, "offensive": NORMAL, "normal": NORMAL}
HATEXPLAIN_TARGETS = {  # HateXplain target (lower-cased) -> unified group
    "homosexual": "lgbtq",
    "gay": "lgbtq",
    "lesbian": "lgbtq",
    "hispanic": "mexican",
    "latinx": "mexican",
    "arab": "middle_east",
}
TOXIGEN_GROUPS = {  # ToxiGen target group (lower-cased) -> unified group
    "lgbtq": "lgbtq",
    "lgbtq+ folks": "lgbtq",
    "mexican": "mexican",
    "mexican folks": "mexican",
    "middle_east": "middle_east",
    "middle eastern folks": "middle_east",
}
TOXIGEN_TEXT_COLUMNS = ("text", "generation")
TOXIGEN_GROUP_COLUMNS = ("target_group", "group")
TOXIGEN_LABEL_COLUMNS = ("prompt_label", "toxicity_human")
IS_HATEXPLAIN = "is this HateXplain's dataset.json (Data/dataset.json of its release)?"
TOXICITY_HUMAN_HATE_ABOVE = 3.0  # mean rating on ToxiGen's 1-5 scale; above the midpoint counts as hate


def build_unified(hatexplain_json: Path, toxigen_dir_or_csv: Path, out_dir: Path, seed: int) -> dict[str, Path]:
    """Write unified_{train,val,test}.json to out_dir; return {"train": path, "val": path, "test": path}."""
    records = hatexplain_records(Path(hatexplain_json)) + toxigen_records(Path(toxigen_dir_or_csv))
    if not records:
        raise DataError(f"{hatexplain_json}, {toxigen_dir_or_csv}: no rows about lgbtq, mexican or middle_east")
    examples = [_as_example(record) for record in records]
    by_id = {example.id: record for example, record in zip(examples, records)}
    rest, test = split_examples(examples, validation_fraction=TEST_FRACTION, seed=seed)
    validation_share_of_rest = VALIDATION_FRACTION / (1 - TEST_FRACTION)
    train, validation = split_examples(rest, validation_fraction=validation_share_of_rest, seed=seed)
    paths = {}
    for name, split in (("train", train), ("val", validation), ("test", test)):
        paths[name] = Path(out_dir) / f"unified_{name}.json"
        rows = [by_id[example.id] for example in split]
        write_atomic(paths[name], json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        logger.info("wrote %d rows to %s", len(rows), paths[name])
    return paths


def hatexplain_records(path: Path) -> list[dict]:
    """Unified records of the HateXplain posts with a majority label and exactly one of the three groups."""
    posts = parse_json(path, read_utf8(path))
    if not isinstance(posts, dict):
        raise DataError(f"{path}: expected HateXplain's dataset.json, an object of post_id -> post")
    records = [_hatexplain_record(post_id, post, f"{path}[{post_id!r}]") for post_id, post in posts.items()]
    kept = [record for record in records if record is not None]
    logger.info("%s: kept %d of %d HateXplain posts", path, len(kept), len(posts))
    return kept


def _hatexplain_record(post_id: str, post: object, where: str) -> dict | None:
    annotators, tokens, rationales = _checked_post(post, where)
    label, votes = Counter(annotator["label"] for annotator in annotators).most_common(1)[0]
    if not _is_majority(votes, annotators):
        return None
    if label not in HATEXPLAIN_LABELS:
        raise DataError(f"{where}: unknown HateXplain label {label!r}; expected one of {', '.join(HATEXPLAIN_LABELS)}")
    targets = Counter(target for annotator in annotators for target in set(annotator["target"]))
    majority_targets = [target for target, count in targets.most_common() if _is_majority(count, annotators)]
    ours = [target for target in majority_targets if target.lower() in HATEXPLAIN_TARGETS]
    if len({HATEXPLAIN_TARGETS[target.lower()] for target in ours}) != 1:
        return None
    return {
        "text": " ".join(tokens),
        "label_binary": HATEXPLAIN_LABELS[label],
        "label_multiclass": label,
        "target_group_norm": HATEXPLAIN_TARGETS[ours[0].lower()],
        "persona_tag": ours[0].lower(),
        "source_dataset": "hatexplain",
        "original_id": post_id,
        "rationale_text": _rationale_text(tokens, rationales, where),
        "split": None,
    }


def _checked_post(post: object, where: str) -> tuple[list[dict], list[str], list[list[int]]]:
    """(annotators, post_tokens, rationales) of a post, each checked for the types HateXplain writes."""
    if not isinstance(post, dict):
        raise DataError(f"{where}: a post must be an object, found {preview(post)}; {IS_HATEXPLAIN}")
    annotators = _required(post, "annotators", where)
    tokens = _required(post, "post_tokens", where)
    if not _is_list_of(annotators, dict) or not annotators:
        raise DataError(f"{where}: 'annotators' must be a non-empty list of objects, found {preview(annotators)};"
                        f" {IS_HATEXPLAIN}")
    if not _is_list_of(tokens, str) or not tokens:
        raise DataError(f"{where}: 'post_tokens' must be a non-empty list of strings, found {preview(tokens)};"
                        f" {IS_HATEXPLAIN}")
    for number, annotator in enumerate(annotators, start=1):
        label, target = _required(annotator, "label", where), _required(annotator, "target", where)
        if not isinstance(label, str) or not _is_list_of(target, str):
            raise DataError(f"{where}: annotator {number} needs a string 'label' and a list of strings 'target',"
                            f" found {preview(annotator)}; {IS_HATEXPLAIN}")
    rationales = post.get("rationales") or []
    if not _is_list_of(rationales, list) or not all(_is_list_of(mask, int) and set(mask) <= {0, 1}
                                                        for mask in rationales):
        raise DataError(f"{where}: 'rationales' must be a list of 0/1 lists, found {preview(rationales)};"
                        f" {IS_HATEXPLAIN}")
    problem = validate_text(" ".join(tokens))
    if problem is not None:
        raise DataError(f"{where}: the post's text holds {problem}; fix the post's tokens or drop the post")
    return annotators, tokens, rationales


def _is_list_of(value: object, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(item, kind) and not isinstance(item, bool) for item in value)


def _is_majority(count: int, voters: list) -> bool:
    return count * 2 > len(voters)


def _rationale_text(tokens: list[str], rationales: list[list[int]], where: str) -> str | None:
    """The tokens a majority of the annotators' rationale masks mark, or None."""
    if any(len(mask) != len(tokens) for mask in rationales):
        raise DataError(f"{where}: a rationale mask does not have one 0/1 entry per post token")
    marks = [sum(column) for column in zip(*rationales)]
    return " ".join(token for token, count in zip(tokens, marks) if _is_majority(count, rationales)) or None


def toxigen_records(path: Path) -> list[dict]:
    """Unified records of the ToxiGen rows about the three groups; ids count data rows across files."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .csv files in the folder; pass ToxiGen's CSV or a folder holding it")
    records = []
    row_number = 0
    for file in files:
        for row in _toxigen_rows(file):
            record = _toxigen_record(row, f"toxigen_{row_number}")
            row_number += 1
            if record is not None:
                records.append(record)
    logger.info("%s: kept %d of %d ToxiGen rows", path, len(records), row_number)
    return records


def _toxigen_rows(path: Path) -> Iterator[dict]:
    """{"where", "text", "group", "label_column", "label_value"} per row of a ToxiGen CSV."""
    columns = None
    for record in csv_records(path, read_utf8(path), None):
        if columns is None:
            header = list(record.values)
            columns = [_pick_column(path, header, names) for names in
                       (TOXIGEN_TEXT_COLUMNS, TOXIGEN_GROUP_COLUMNS, TOXIGEN_LABEL_COLUMNS)]
        text_column, group_column, label_column = columns
        yield {
            "where": record.where,
            "text": record.values[text_column].strip(),
            "group": record.values[group_column].strip().lower(),
            "label_column": label_column,
            "label_value": record.values[label_column],
        }


def _pick_column(path: Path, header: list[str], names: tuple[str, ...]) -> str:
    for name in names:
        if name in header:
            return name
    raise DataError(f"{path}:1: no column {either(names)} (columns: {', '.join(header)}); is this a ToxiGen CSV?")


def _toxigen_record(row: dict, original_id: str) -> dict | None:
    if row["group"] not in TOXIGEN_GROUPS:
        return None
    if not row["text"]:
        logger.info("%s: skipped a row with empty text", row["where"])
        return None
    problem = validate_text(row["text"])
    if problem is not None:
        raise DataError(f"{row['where']}: text holds {problem}; fix the row or drop it")
    hate = _toxigen_is_hate(row)
    return {
        "text": row["text"],
        "label_binary": HATE if hate else NORMAL,
        "label_multiclass": "toxic_implicit" if hate else "benign_implicit",
        "target_group_norm": TOXIGEN_GROUPS[row["group"]],
        "persona_tag": row["group"],
        "source_dataset": "toxigen",
        "original_id": original_id,
        "rationale_text": None,
        "split": None,
    }


def _toxigen_is_hate(row: dict) -> bool:
    column, value = row["label_column"], row["label_value"]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{row['where']}: {column} {value!r} is not a number; fix the row or drop it") from None
    if column == "toxicity_human":
        return number > TOXICITY_HUMAN_HATE_ABOVE
    if number not in (0, 1):
        raise DataError(f"{row['where']}: prompt_label {value!r} is not 0 or 1; fix the row or drop it")
    return number == 1


def _as_example(record: dict) -> Example:
    return Example(
        id=f"{record['source_dataset']}-{record['original_id']}",
        text=record["text"],
        label=record["label_binary"],
        group=record["target_group_norm"],
        source=record["source_dataset"],
    )


def _required(mapping: dict, name: str, where: str):
    if name not in mapping:
        raise DataError(
            f"{where}: missing field {name!r} (fields present: {names_of(mapping)}); {IS_HATEXPLAIN}"
        )
    return mapping[name]
