"""What makes a text classifiable: not empty, encodable as UTF-8, no control characters.

Readers turn a reason into a file:line DataError; the server into a 422 for that one text.
"""

import re

# C0 controls other than tab, newline and carriage return; DEL; C1 controls other than NEL (U+0085,
# a line break some editors write). They are invisible, change how a tokenizer splits, and in real
# posts come from broken exports, not from people.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")


def validate_text(text: str) -> str | None:
    """Why `text` cannot be classified, or None when it can."""
    if not text.strip():
        return "the text is empty"
    return character_problem(text)


def character_problem(value: str) -> str | None:
    """Why `value` holds a character hatelens refuses (lone surrogate, control character), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"a lone surrogate U+{ord(value[error.start]):04X} at character {error.start + 1}"
                " (half of a UTF-16 pair, not valid Unicode text)")
    match = _CONTROL.search(value)
    if match:
        return f"a control character U+{ord(match.group()):04X} at character {match.start() + 1}"
    return None
