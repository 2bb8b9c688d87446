"""splits.json: which file holds which split (train, validation, test), by content.

`hatelens data split` writes it beside train.jsonl and validation.jsonl: each role's file and the hash
of its examples (`examples_hash`), and the test split's file when there is one. `hatelens calibrate`
reads it to refuse a run scored on the test split, whatever the file is called (a renamed copy has the
same examples; a file merely named "contest" is not the test split).
"""

import json
from pathlib import Path
from typing import Sequence

from hatelens.data.examples import Example, examples_hash, load_examples
from hatelens.errors import DataError
from hatelens.files import file_sha256, write_atomic

SPLITS_FILE = "splits.json"
DEFAULT_TEST_FILE = Path("data/unified/unified_test.json")  # the shipped test split, where it is present


def write_split_record(folder: Path, splits: dict[str, tuple[Path, Sequence[Example]]]) -> Path:
    """splits.json in `folder`: {"splits": {role: {"file", "examples_sha256", "data_sha256", "n"}}}, the files
    already written."""
    record = {"splits": {role: {"file": str(path), "examples_sha256": examples_hash(examples),
                                "data_sha256": file_sha256(path), "n": len(examples)}
                         for role, (path, examples) in splits.items()}}
    path = Path(folder) / SPLITS_FILE
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def nearest_split_record(data_file: str | Path) -> Path | None:
    """The splits.json in the data file's folder or the nearest folder above it; None when there is none."""
    folder = Path(data_file).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / SPLITS_FILE).is_file():
            return candidate / SPLITS_FILE
    return None


def known_test_splits(data_file: str | Path) -> list[dict]:
    """The test splits a run on `data_file` must not be: [{"file", "examples_sha256", "data_sha256"}], from the nearest
    splits.json (its recorded hash, and the hash of the named file as it is now) and the shipped
    data/unified/unified_test.json when present (hashed from the file)."""
    known = []
    record_path = nearest_split_record(data_file)
    if record_path is not None:
        test = _read_record(record_path).get("test")
        if test:
            known.append({"file": test["file"], "examples_sha256": test["examples_sha256"],
                          "data_sha256": test.get("data_sha256")})
            known += _hash_file(Path(test["file"]))
    known += _hash_file(DEFAULT_TEST_FILE)
    return known


def _hash_file(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [{"file": str(path), "examples_sha256": examples_hash(load_examples(path).examples),
             "data_sha256": file_sha256(path)}]


def _read_record(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON; run `hatelens data split` again to rewrite it") from None
    splits = values.get("splits") if isinstance(values, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(entry, dict) and {"file", "examples_sha256"} <= set(entry)
                                               for entry in splits.values()):
        raise DataError(f"{path}: expected {{\"splits\": {{role: {{\"file\", \"examples_sha256\"}}}}}}; "
                        "run `hatelens data split` again to rewrite it")
    return splits
