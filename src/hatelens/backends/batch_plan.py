"""Where an evaluation cuts its prompts, sorted by length, into batches.

Every batch is as wide as its longest prompt, so the cuts decide how many pad tokens the model computes. With a
row limit only, batches are filled in turn. With a token budget (`max_batch_tokens`) on a GPU (`HFClassifier` keeps
filling in turn on a CPU, where its figures were measured), the cuts are chosen to minimise the padded tokens plus
a fixed cost per batch (`BATCH_COST_SHARE` of the budget: the kernel launches and the pass over the shared prompt
opening that every batch pays): filling each batch in turn left a
quarter of the 1,009 test prompts' tokens as pads for gpt-oss (41,070 computed for 30,718 real), mostly in the
last batch, where 241 prompts were padded to the longest one. `padded` lays a batch out as tensors.
"""

import itertools
from collections.abc import Sequence

import numpy as np
import torch

BATCH_COST_SHARE = 1 / 16  # a batch costs as much as this share of the token budget in pads (2,048 of 32,768)


def batch_end(widths: Sequence[int], start: int, *, max_rows: int, max_tokens: int | None = None) -> int:
    """End (exclusive) of the batch starting at `start` over ascending `widths`, filled in turn: at most `max_rows`
    rows and, with `max_tokens`, at most that many padded tokens (rows x the widest row). Never fewer than one row."""
    end = min(len(widths), start + max_rows)
    if not max_tokens:
        return end
    rows = 1
    while start + rows < end and (rows + 1) * widths[start + rows] <= max_tokens:
        rows += 1
    return start + rows


def batch_ends(widths: Sequence[int], start: int, *, max_rows: int, max_tokens: int | None = None,
               cost_share: float | None = BATCH_COST_SHARE) -> list[int]:
    """Ends (exclusive, ascending, the last one len(widths)) of the batches covering ascending `widths[start:]`,
    each within `max_rows` rows and `max_tokens` padded tokens (a row wider than the budget alone). Without a token
    budget, or with cost_share None, each batch is filled in turn (`batch_end`); else the cuts minimise the padded
    tokens plus cost_share x max_tokens a batch (dynamic programming over the cut points: ~10 ms for 1,009 rows)."""
    if not max_tokens or cost_share is None:
        ends = [start]
        while ends[-1] < len(widths):
            ends.append(batch_end(widths, ends[-1], max_rows=max_rows, max_tokens=max_tokens))
        return ends[1:]
    rows = len(widths) - start
    cost = np.zeros(rows + 1)  # cost[e]: cheapest plan for the first e rows
    cut = [0] * (rows + 1)
    positions = np.arange(rows + 1)
    for end in range(1, rows + 1):
        width = max(int(widths[start + end - 1]), 1)
        first = max(0, end - max_rows, end - max(1, max_tokens // width))
        candidates = cost[first:end] - positions[first:end] * width  # + end x width, the same for every start
        best = int(candidates.argmin())
        cost[end] = candidates[best] + end * width + cost_share * max_tokens
        cut[end] = first + best
    ends, end = [], rows
    while end:
        ends.append(start + end)
        end = cut[end]
    return ends[::-1]


def padded(sequences: list[list[int]], pad: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), rows x the longest sequence: each sequence, then `pad` up to the width
    (before it with `left`)."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    width = int(lengths.max(initial=0))
    real = np.arange(width) >= width - lengths[:, None] if left else np.arange(width) < lengths[:, None]
    input_ids = np.full(real.shape, pad, dtype=np.int64)
    input_ids[real] = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(input_ids), torch.from_numpy(real.astype(np.int64))
