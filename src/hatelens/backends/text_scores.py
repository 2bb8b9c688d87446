"""Scores of texts from a model already in memory, exactly as `hatelens evaluate` computes them.

Training hands `score_texts` to its trainer for the validation figures of each checkpoint
(training/trainer.py says why): P(hate) per text, and beside it the log-probability of each label's
answer, from which the trainer also reads its validation loss without a second pass over the split.
"""

from typing import NamedTuple, Sequence

import numpy as np

from hatelens.backends import prompts
from hatelens.backends.hf import HFClassifier


class TextScores(NamedTuple):
    scores: np.ndarray  # P(hate) per text, normalised over the answers (what the evaluator thresholds)
    # (texts, answers): log P(hate's answer tokens), log P(normal's), log P(each fine answer's), over the vocabulary
    label_log_probs: np.ndarray
    truncated: np.ndarray  # bool per text: its post was cut to fit max_length_tokens


def score_texts(model, tokenizer, template: prompts.PromptTemplate, texts: Sequence[str], *,
                batch_size: int, max_length_tokens: int | None = None) -> TextScores:
    """P(hate) and the answers' log-probabilities per text, through the evaluator's own classifier."""
    classifier = HFClassifier(model, tokenizer, template, batch_size=batch_size, max_length_tokens=max_length_tokens)
    outputs = classifier.classify(texts)
    return TextScores(np.array([output.score for output in outputs]),
                      np.array([output.label_log_probs for output in outputs], dtype=np.float64)
                      .reshape(len(outputs), -1),
                      np.array([output.truncated for output in outputs], dtype=bool))
