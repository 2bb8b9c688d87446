"""The contract every backend keeps.

A backend is built once with its model, prompt template and mode, then asked about batches of
texts. It never applies a decision threshold: `evaluate` does, so thresholds stay a property of a
run, not of a model.
"""

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Output:
    """What a backend says about one text.

    score:  P(hate) normalised over the two label words (score mode); None in generate mode
            unless the backend has log-probabilities.
    answer: "hate" / "normal" parsed from generated text (generate mode); None when the text could
            not be parsed (an *invalid* answer) or in score mode.
    raw:    the generated text (generate mode), kept for audit.
    truncated: the post was cut so the prompt fits max_length_tokens (hf backend; the start is kept).
    label_log_probs: (log P(hate's answer tokens), log P(normal's), log P(each fine answer's word)...) over the
            whole vocabulary, which `score` normalises (hf backend, score mode); training reads its validation
            loss here.
    """

    score: float | None = None
    answer: str | None = None
    raw: str | None = None
    truncated: bool = False
    label_log_probs: tuple[float, ...] | None = None


class Classifier(Protocol):
    """Scores texts. `model_version` names exactly what answers (model id + adapter hash)."""

    model_version: str
    mode: str  # "score" or "generate"

    def classify(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> list[Output]:
        """One Output per text, in the order given."""
        ...
