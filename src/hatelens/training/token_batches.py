"""Training batches bounded by tokens, not rows: what keeps a real epoch's peak memory flat.

With a fixed row count, the batch of the longest records sets the peak (gpt-oss-20b: 32 rows padded to
539 tokens peaked at 116 GiB while the epoch's typical batch needed 50). Here the records are sorted by
length and cut into batches whose padded size after the shared prompt opening (rows x (longest record
- opening), the part the model computes) stays within a budget: short records come many to a batch,
long ones few. Every record appears exactly once per epoch; records of equal length are shuffled and
the batches' order is shuffled, both by seed and epoch.
"""

import random
from typing import Iterator, Sequence

from hatelens.errors import ConfigError


class TokenBudgetBatchSampler:
    """Batches of dataset indices (a DataLoader `batch_sampler`).

    lengths: tokens of each record; max_batch_tokens: the padded-token budget of one batch; max_rows:
    the most rows a batch may hold; skipped: leading tokens every record shares (run once per batch,
    so not counted). A single record over the budget still gets its own batch.
    """

    def __init__(self, lengths: Sequence[int], *, max_batch_tokens: int, max_rows: int, seed: int = 0,
                 skipped: int = 0):
        if max_batch_tokens <= 0 or max_rows <= 0:
            raise ConfigError(f"max_batch_tokens and batch_size must be positive, got {max_batch_tokens} and "
                              f"{max_rows}; set max_batch_tokens=null for batches of batch_size rows")
        self.lengths = list(lengths)
        self.max_batch_tokens, self.max_rows, self.seed, self.skipped = max_batch_tokens, max_rows, seed, skipped
        self.epoch = 0
        self._sizes = _batch_sizes(sorted(self.lengths), max_batch_tokens, max_rows, skipped)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer (through accelerate) before each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._sizes)

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)  # ties in length broken at random: which records share a batch varies by epoch
        order.sort(key=self.lengths.__getitem__)  # stable: the shuffle survives among equal lengths
        batches, start = [], 0
        for size in self._sizes:  # the cut depends on the sorted lengths only: the same every epoch
            batches.append(order[start:start + size])
            start += size
        rng.shuffle(batches)
        yield from batches

    def padded_tokens(self) -> int:
        """Tokens the model computes over one epoch, padding included (for the run's summary)."""
        ordered, total, start = sorted(self.lengths), 0, 0
        for size in self._sizes:
            total += size * (ordered[start + size - 1] - self.skipped)
            start += size
        return total


def _batch_sizes(ordered: list[int], max_batch_tokens: int, max_rows: int, skipped: int) -> list[int]:
    """Greedy cut of ascending lengths: grow a batch while (rows + 1) x (its longest - skipped) fits."""
    sizes, start = [], 0
    while start < len(ordered):
        rows = 1
        while (start + rows < len(ordered) and rows < max_rows
               and (rows + 1) * (ordered[start + rows] - skipped) <= max_batch_tokens):
            rows += 1
        sizes.append(rows)
        start += rows
    return sizes
