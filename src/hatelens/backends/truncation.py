"""Prompts that fit `max_length_tokens`: an over-long post is cut, never the instructions (and the server's
cap on a post's own tokens, `cut_posts`).

A prompt is the template's instructions (chat header, system prompt, policy, few-shot examples) around
one post. When the rendered prompt is longer than `max_length_tokens`, the post keeps its start (as many
of its own tokens as the budget allows, cut at a token boundary of the original characters) and the
prompt is rendered again, so the chat template and the answer opening stay whole. Scoring, generation
and training records (training/records.py) all cut here, so a fine-tuned model is scored on the same
cut text it learned from.
"""

from typing import Sequence

from hatelens.backends import prompts
from hatelens.errors import ConfigError


def fit_prompts(template: prompts.PromptTemplate, texts: Sequence[str], tokenizer, *, prefill_answer: bool,
                max_length_tokens: int | None, reserve_tokens: int = 0) -> tuple[list[list[int]], list[bool]]:
    """(prompt ids, cut?) per text: each prompt at most `max_length_tokens - reserve_tokens` tokens
    (reserve: tokens that follow the prompt, such as a training record's answer). None: no cap."""
    rendered = prompts.render_prompts(template, texts, tokenizer, prefill_answer=prefill_answer)
    ids = tokenizer(rendered, add_special_tokens=False).input_ids if rendered else []
    cut = [False] * len(ids)
    if max_length_tokens is None:
        return ids, cut
    budget = max_length_tokens - reserve_tokens
    for index, text in enumerate(texts):
        if len(ids[index]) > budget:
            ids[index] = _cut_to_fit(template, text, tokenizer, budget, prefill_answer, len(ids[index]))
            cut[index] = True
    return ids, cut


def _cut_to_fit(template, text: str, tokenizer, budget: int, prefill_answer: bool, length: int) -> list[int]:
    """The prompt ids with the post cut to its first k tokens, k as large as fits `budget`."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [end for _, end in encoded["offset_mapping"]]
    keep = len(ends) - (length - budget)  # the post's tokens minus the excess (merges at the cut may differ)
    while keep > 0:
        ids = _render_ids(template, text[:ends[keep - 1]], tokenizer, prefill_answer)
        if len(ids) <= budget:
            return ids
        keep -= max(1, len(ids) - budget)
    ids = _render_ids(template, "", tokenizer, prefill_answer)
    if len(ids) <= budget:
        return ids
    raise ConfigError(f"template {template.name} is {len(ids)} tokens without any post, over the "
                      f"{budget} max_length_tokens allows; raise max_length_tokens or use a shorter template")


def _render_ids(template, text: str, tokenizer, prefill_answer: bool) -> list[int]:
    prompt = prompts.render_prompt(template, text, tokenizer, prefill_answer=prefill_answer)
    return tokenizer(prompt, add_special_tokens=False).input_ids


def cut_posts(texts: Sequence[str], tokenizer, max_tokens: int) -> tuple[list[str], list[int], list[bool]]:
    """(post, its tokens, cut?) per text, the post alone in the tokenizer's tokens: one over `max_tokens`
    keeps its start, its first `max_tokens` tokens' characters (the server's cap, serving/posts.py)."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    posts, counts, cut = [], [], []
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        over = len(offsets) > max_tokens
        posts.append(text[:offsets[max_tokens - 1][1]] if over else text)
        counts.append(max(1, min(len(offsets), max_tokens)))
        cut.append(over)
    return posts, counts, cut
