"""Generated text -> "hate", "normal", or None (an invalid answer). Never a guess from a substring.

Rules, in order:
1. gpt-oss (harmony): only the `final` channel is the answer. Raw form
   `<|channel|>final<|message|>ANSWER<|return|>`; decoded form (special tokens skipped)
   `analysis...assistantfinalANSWER` (or `finalANSWER` with no reasoning). Reasoning without a
   final channel is invalid: the model's thinking is never its answer.
2. JSON: the answer (code fences stripped) is exactly one JSON object whose "classification"
   (or "label") value is a label spelling.
3. A label word at the very start of the answer (after quotes, markdown bold and an "Answer:" /
   "Label:" / "Classification:" prefix), followed by the end, whitespace or punctuation other
   than "/" and "|". "This is hate" and "hate/normal" are invalid.
"""

import json
import re
import string

from hatelens.data.labels import HATE, NORMAL, normalize_label
from hatelens.errors import ConfigError

# Plain-word spellings accepted at the start of an answer. "not hateful" is unambiguous as a whole
# phrase, so it counts as normal; it can never match "hateful" because matching is at the start only.
DEFAULT_LABEL_WORDS = {
    "hate": HATE,
    "hateful": HATE,
    "normal": NORMAL,
    "not hate": NORMAL,
    "not hateful": NORMAL,
    "non-hateful": NORMAL,
}

# raw harmony: the final message runs to <|return|>, <|end|>, <|call|>, the next <|start|> or the end
_RAW_FINAL = re.compile(
    r"<\|channel\|>final[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"(.*?)(?=<\|return\|>|<\|end\|>|<\|call\|>|<\|start\|>|\Z)",
    re.DOTALL,
)
_DECODED_FINAL = "assistantfinal"
_CODE_FENCE = re.compile(r"\A```[a-zA-Z]*\s*(.*?)\s*```\Z", re.DOTALL)
_PREFIX = re.compile(r"\A(?:final\s+)?(?:answer|label|classification)\s*[*_]*\s*:", re.IGNORECASE)
_WRAPPING = "\"'`*_“”‘’ \t\r\n"  # quotes, markdown emphasis and whitespace around an answer
_ANSWER_KEYS = ("classification", "label")
# what may follow a label word: punctuation, except "/" and "|", which echo the options ("hate/normal")
_WORD_END = set(string.punctuation) - set("/|")
# "hate or normal", "normal, or hate": the prompt's options echoed back
_ECHOED_OPTIONS = re.compile(r"\A[\s*_\"'`]*,?\s*(?:or|and|vs\.?|versus)\s+\W*(?:hate|hateful|normal|not hate)\b")


def parse_answer(text: str, label_words: dict[str, str] | None = None,
                 fine_words: dict[str, str] | None = None) -> str | None:
    """Return "hate" / "normal" for a clear answer, None for anything else.

    label_words maps a label to the word a prompt asked for, e.g. {"hate": "Offensive",
    "normal": "Fine"}; those words are accepted besides the default spellings. fine_words maps a
    template's fine answer words to the label they stand for ({" offensive": "normal"}).
    """
    words = _label_word_table(label_words, fine_words)
    content = final_channel(text)
    if content is None:
        return None
    content = content.strip()
    fenced = _CODE_FENCE.match(content)
    if fenced:
        content = fenced.group(1).strip()
    if content.startswith("{"):
        return _parse_json(content, words)
    return _parse_leading_word(content, words)


def final_channel(text: str) -> str | None:
    """The part of a generation that is the answer: a gpt-oss final channel, else the whole text.

    None when the text holds gpt-oss reasoning (an analysis channel) but no final channel.
    """
    raw_finals = _RAW_FINAL.findall(text)
    if raw_finals:
        return raw_finals[-1]
    if "<|channel|>" in text:
        return None  # raw harmony with channels, none of them final
    if _DECODED_FINAL in text:
        return text[text.rindex(_DECODED_FINAL) + len(_DECODED_FINAL) :]
    stripped = text.lstrip()
    if stripped.startswith("analysis"):
        return None  # decoded reasoning that never reached a final answer
    if re.match(r"final\S", stripped):
        return stripped[len("final") :]  # decoded final channel with no reasoning before it
    return text


def _label_word_table(label_words: dict[str, str] | None, fine_words: dict[str, str] | None = None) -> dict[str, str]:
    """{lowercase word: label}, longest word first so "hateful" is tried before "hate"."""
    table = dict(DEFAULT_LABEL_WORDS)
    table.update({word.strip().lower(): label for word, label in (fine_words or {}).items()})
    for label, word in (label_words or {}).items():
        if label not in (HATE, NORMAL):
            raise ConfigError(f"label_words key {label!r} is not 'hate' or 'normal'")
        if not word.strip():
            raise ConfigError(f"label_words[{label!r}] is empty; give the word the prompt asks for")
        table[word.strip().lower()] = label
    return dict(sorted(table.items(), key=lambda item: -len(item[0])))


def _parse_json(content: str, words: dict[str, str]) -> str | None:
    """The label in a JSON object's "classification"/"label" value; None if absent or unclear."""
    try:
        answer = json.loads(content)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    keys = {str(key).lower(): value for key, value in answer.items()}
    found = {_label_from_value(keys[key], words) for key in _ANSWER_KEYS if key in keys}
    return found.pop() if len(found) == 1 else None  # absent, or two keys that disagree


def _label_from_value(value: object, words: dict[str, str]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    if isinstance(value, int):
        return normalize_label(value)
    key = value.strip().lower()
    # "hate speech" / "non-hateful" -> the underscore spellings labels.py knows
    return words.get(key) or normalize_label(key) or normalize_label(re.sub(r"[\s-]+", "_", key))


def _parse_leading_word(content: str, words: dict[str, str]) -> str | None:
    """The label word that opens the answer, followed by the end, punctuation or whitespace."""
    previous = None
    while content != previous:  # peel quotes, **bold** and "Answer:" prefixes in any order
        previous = content
        content = _PREFIX.sub("", content.strip(_WRAPPING), count=1)
    lowered = content.lower()
    for word, label in words.items():
        if lowered.startswith(word):
            rest = lowered[len(word) :]
            if rest and not (rest[0].isspace() or rest[0] in _WORD_END):
                continue
            if _ECHOED_OPTIONS.match(rest):
                return None  # "hate or normal": the options read back, not an answer
            return label
    return None
