"""The two classes, their spellings in the wild, and their integer codes (1 = hate)."""

HATE = "hate"
NORMAL = "normal"
LABELS = (NORMAL, HATE)  # index == integer code used by metrics

_SPELLINGS = {
    HATE: {"hate", "hateful", "1", "hate_speech", "hatespeech"},
    NORMAL: {"normal", "not_hate", "not hate", "non-hateful", "non_hateful", "not_hateful", "0"},
}


def normalize_label(value: object) -> str | None:
    """Map a label spelling ("hateful", 1, "not_hate", ...) to "hate"/"normal"; None if unknown."""
    if isinstance(value, bool):
        value = int(value)
    key = str(value).strip().lower()
    for label, spellings in _SPELLINGS.items():
        if key in spellings:
            return label
    return None


def to_int(label: str) -> int:
    """'hate' -> 1, 'normal' -> 0."""
    return 1 if label == HATE else 0
