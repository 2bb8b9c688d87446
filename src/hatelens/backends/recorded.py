"""Scores that training already computed, served as a classifier: `hatelens run` reuses them.

Training scores the validation split at each evaluation with the evaluator's own classifier
(backends/text_scores.py): before its first step (the base model: LoRA's B matrices start at zero, so the
adapter adds exactly nothing) and at each epoch's end. `hatelens run` needs the same two sets of scores as
its validation steps, the base model's and the best checkpoint's. Instead of scoring the split twice more it
records the training's calls (`ScoreRecorder`) and hands the evaluator a `RecordedClassifier` over the one that
matches. A text the recording lacks, or whose prompt training cut, sends the whole call to the real model.
The pipeline asks for this only where the two compute alike: float32 weights on both sides, one process.
"""

from typing import Callable, Sequence

from hatelens.backends import models
from hatelens.backends.base import Output
from hatelens.backends.text_scores import TextScores, score_texts


def model_version(config) -> str:
    """The model_version the hf classifier of this ModelConfig reports (hf.load_for_inference), without loading it."""
    name, adapter = models.base_and_adapter(config.model, config.adapter)
    return models.model_version(models.resolve_model(name).model_id, adapter)


class ScoreRecorder:
    """A TextScorer (training/trainer.py) that scores through `score_texts` and keeps every call's scores."""

    def __init__(self, scorer=score_texts):
        self.scorer = scorer
        self.calls: list[tuple[list[str], TextScores]] = []

    def __call__(self, model, tokenizer, template, texts: Sequence[str], **kwargs) -> TextScores:
        scored = self.scorer(model, tokenizer, template, texts, **kwargs)
        self.calls.append((list(texts), scored))
        return scored

    def at_step(self, summary: dict, step: int) -> tuple[list[str], TextScores] | None:
        """(texts, scores) of the training's evaluation at `step` (training_summary.json's `evaluations`); None
        when this recorder did not see every evaluation (a resumed run, another process) or none was at `step`."""
        evaluations = summary.get("evaluations") or []
        if len(evaluations) != len(self.calls):
            return None
        return next((call for evaluation, call in zip(evaluations, self.calls) if evaluation["step"] == step), None)


class RecordedClassifier:
    """A score-mode Classifier answering from recorded scores; `fallback()` builds the real one when needed."""

    mode = "score"

    def __init__(self, recorded: tuple[list[str], TextScores], *, model_version: str, scores_from: str,
                 fallback: Callable[[], object]):
        texts, scored = recorded
        self.model_version = model_version  # what the real classifier of this model + adapter reports
        self.scores_from = scores_from  # recorded in the evaluation's metrics.json
        self.outputs = {text: Output(score=float(score), label_log_probs=tuple(float(value) for value in answers))
                        for text, score, answers, cut in zip(texts, scored.scores, scored.label_log_probs,
                                                             scored.truncated) if not cut}
        self.fallback, self.real = fallback, None

    def classify(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> list[Output]:
        if all(text in self.outputs for text in texts):
            return [self.outputs[text] for text in texts]
        if self.real is None:
            self.real = self.fallback()
            self.scores_from += "; the texts it lacked scored by the model"
        return self.real.classify(texts, groups)
