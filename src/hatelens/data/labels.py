"""The two classes, their spellings in the wild, and their integer codes (1 = hate)."""

from typing import Sequence

import numpy as np

from hatelens.errors import DataError

HATE = "hate"
NORMAL = "normal"
LABELS = (NORMAL, HATE)  # index == integer code used by metrics
GROUPS = ("lgbtq", "mexican", "middle_east")  # the target groups of the data, in the order reports list them

_SPELLINGS = {
    HATE: {"hate", "hateful", "1", "hate_speech", "hatespeech"},
    NORMAL: {"normal", "not_hate", "not hate", "non-hateful", "non_hateful", "not_hateful", "0"},
}


def normalize_label(value: object) -> str | None:
    """Map a label spelling ("hateful", 1, "not_hate", ...) to "hate"/"normal"; None if unknown.

    Booleans are unknown: `true` says "yes" to a question the file does not state (hateful? offensive?
    correct?), and Python would read it as 1 = hate.
    """
    if isinstance(value, bool):
        return None
    key = str(value).strip().lower()
    for label, spellings in _SPELLINGS.items():
        if key in spellings:
            return label
    return None


def to_int(label: str) -> int:
    """'hate' -> 1, 'normal' -> 0."""
    return 1 if label == HATE else 0


def encode_predictions(
    labels: Sequence[str], predictions: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """("hate"/"normal" labels, predictions with None = invalid) -> (y_true, y_pred, invalid).

    y_pred scores an invalid answer as the wrong class (see INVALID_POLICY); codes are 1 = hate.
    """
    if len(labels) != len(predictions):
        raise DataError(f"{len(labels)} labels but {len(predictions)} predictions; give one per row")
    for row, label in enumerate(labels):
        if label not in (HATE, NORMAL):
            raise DataError(f"label {label!r} in row {row} is not 'hate' or 'normal'")
    for row, prediction in enumerate(predictions):
        if prediction not in (HATE, NORMAL, None):
            raise DataError(f"prediction {prediction!r} in row {row} is not 'hate', 'normal' or None")
    y_true = np.array([to_int(label) for label in labels], dtype=int)
    invalid = np.array([prediction is None for prediction in predictions], dtype=bool)
    answered = [to_int(prediction) if prediction else 0 for prediction in predictions]
    y_pred = np.where(invalid, 1 - y_true, np.array(answered, dtype=int))
    return y_true, y_pred, invalid
