"""Datasets: read any supported file into Examples, split and sample them, rebuild the unified splits
from their public sources, and load functional test suites.

The public names of `examples` and `splits` are re-exported here: `from hatelens import data` then
`data.load_examples(...)`, `data.split_examples(...)`.
"""

from hatelens.data.examples import (
    UNKNOWN_GROUP,
    Example,
    LoadResult,
    examples_hash,
    load_examples,
    normalize_group,
    normalize_text,
    write_jsonl,
    write_jsonl_files,
)
from hatelens.data.splits import split_examples, split_stats, stratified_sample
from hatelens.data.texts import validate_text

__all__ = [
    "UNKNOWN_GROUP", "Example", "LoadResult", "examples_hash", "load_examples", "normalize_group",
    "normalize_text", "split_examples", "split_stats", "stratified_sample", "validate_text", "write_jsonl",
    "write_jsonl_files",
]
