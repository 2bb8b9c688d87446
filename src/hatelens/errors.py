"""The errors hatelens raises on bad input. The CLI turns each into one line and exit code 2.

Messages name the bad value, where it was (file:line when there is one) and how to fix it.
"""


class HatelensError(Exception):
    """Base of every error a user can fix."""


class ConfigError(HatelensError):
    """A recipe, flag or override is wrong."""


class DataError(HatelensError):
    """A dataset file is unreadable or holds a bad record."""


class ModelError(HatelensError):
    """A model, tokenizer or adapter cannot be found or loaded."""
