"""A request's posts in the served model's tokens: each cut to `max_text_tokens` before it is queued,
each counted against the micro-batches' token budget (batching.py).

Tokens, not characters, are what a forward pass costs: 10,000 characters of English are about 2,500
tokens, of emoji up to 10,000. The cap bounds the largest request the limits allow (max_texts x
max_text_tokens), so it answers in seconds instead of minutes. A cut post keeps its start, as
`max_length_tokens` cuts one (backends/truncation.py), and its result says `truncated`.
The hf backend counts with its own tokenizer; the others (an API, the reference encoder) have none
here, and count a token per CHARS_PER_TOKEN characters.
"""

import math
from dataclasses import dataclass
from typing import Sequence

from hatelens.backends.base import Classifier
from hatelens.backends.truncation import cut_posts

CHARS_PER_TOKEN = 4  # English in a BPE vocabulary; only for backends without a tokenizer here


@dataclass
class Posts:
    texts: list[str]  # as they will be scored: a post over the cap cut to its first max_text_tokens tokens
    tokens: list[int]  # per text, at most max_text_tokens
    cut: list[bool]


class PostMeter:
    """Cuts and counts posts with a tokenizer, or by characters where the backend has none."""

    def __init__(self, tokenizer, max_text_tokens: int):
        self.tokenizer, self.max_text_tokens = tokenizer, max_text_tokens

    @classmethod
    def for_model(cls, model: Classifier, max_text_tokens: int) -> "PostMeter":
        from hatelens.backends.hf import HFClassifier

        return cls(model.tokenizer if isinstance(model, HFClassifier) else None, max_text_tokens)

    def measure(self, texts: Sequence[str]) -> Posts:
        if self.tokenizer is not None:
            return Posts(*cut_posts(texts, self.tokenizer, self.max_text_tokens))
        max_chars = self.max_text_tokens * CHARS_PER_TOKEN
        return Posts([text[:max_chars] for text in texts],
                     [max(1, min(math.ceil(len(text) / CHARS_PER_TOKEN), self.max_text_tokens)) for text in texts],
                     [len(text) > max_chars for text in texts])
