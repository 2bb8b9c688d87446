"""Sampling and splitting examples (stratified by label x group), and what splits share."""

import random
from collections import Counter, defaultdict
from itertools import combinations
from typing import Sequence

from hatelens.data.examples import Example, normalize_text
from hatelens.errors import ConfigError


def stratified_sample(examples: Sequence[Example], n: int, *, seed: int) -> list[Example]:
    """A seeded sample of n examples, stratified by label x group, in the original order."""
    if n < 0:
        raise ConfigError(f"sample size must be 0 or more, got {n}")
    if n >= len(examples):
        return list(examples)
    return [examples[index] for index in _stratified_indices(examples, n, seed)]


def split_examples(
    examples: Sequence[Example], *, validation_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, validation), seeded and stratified by label x group, each in the original order.

    The validation split holds round(validation_fraction * len(examples)) examples.
    """
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    chosen = set(_stratified_indices(examples, round(validation_fraction * len(examples)), seed))
    train = [example for index, example in enumerate(examples) if index not in chosen]
    validation = [example for index, example in enumerate(examples) if index in chosen]
    return train, validation


def _stratified_indices(examples: Sequence[Example], n: int, seed: int) -> list[int]:
    """Sorted indices of n examples: each label x group stratum gets its share (largest remainder)."""
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        strata[(example.label, example.group)].append(index)
    counts = _allocate({key: len(indices) for key, indices in strata.items()}, n)
    generator = random.Random(seed)
    chosen = []
    for key in sorted(strata):  # a fixed order, so the same seed draws the same examples
        chosen.extend(generator.sample(strata[key], counts[key]))
    return sorted(chosen)


def _allocate(sizes: dict[tuple[str, str], int], total: int) -> dict[tuple[str, str], int]:
    """Split `total` across strata in proportion to their sizes; leftover units go to the largest remainders."""
    population = sum(sizes.values())
    counts = {key: total * size // population for key, size in sizes.items()}
    remainders = {key: total * size % population for key, size in sizes.items()}
    leftover = total - sum(counts.values())
    for key in sorted(sizes, key=lambda key: (-remainders[key], key))[:leftover]:
        counts[key] += 1
    return counts


def split_stats(named_splits: dict[str, Sequence[Example]]) -> dict:
    """Counts per split, and the texts (normalised) each pair of splits shares, with their ids.

    {"splits": {name: {"examples", "by_label", "by_group", "by_source", "by_label_group"}},
     "overlaps": [{"splits": [a, b], "shared_texts": k, "ids": [{a: [...], b: [...]}, ...]}]}
    """
    return {
        "splits": {name: _split_counts(examples) for name, examples in named_splits.items()},
        "overlaps": [
            _overlap(first, named_splits[first], second, named_splits[second])
            for first, second in combinations(named_splits, 2)
        ],
    }


def _split_counts(examples: Sequence[Example]) -> dict:
    labels = sorted({example.label for example in examples})
    return {
        "examples": len(examples),
        "by_label": _tally(example.label for example in examples),
        "by_group": _tally(example.group for example in examples),
        "by_source": _tally(example.source or "unknown" for example in examples),
        "by_label_group": {
            label: _tally(example.group for example in examples if example.label == label) for label in labels
        },
    }


def _tally(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _overlap(first_name: str, first: Sequence[Example], second_name: str, second: Sequence[Example]) -> dict:
    first_ids, second_ids = _ids_by_text(first), _ids_by_text(second)
    shared = sorted(first_ids.keys() & second_ids.keys())
    return {
        "splits": [first_name, second_name],
        "shared_texts": len(shared),
        "ids": [{first_name: first_ids[text], second_name: second_ids[text]} for text in shared],
    }


def _ids_by_text(examples: Sequence[Example]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        ids[normalize_text(example.text)].append(example.id)
    return ids
