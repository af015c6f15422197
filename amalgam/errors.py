"""One exception type for mistakes a user can fix, so the CLI prints one line instead of a traceback."""

from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


def one_of(choices: Iterable[str]) -> str:
    """Choices as words for help and messages (`one of: cosine, step, none`), never a Python list."""
    return "one of: " + ", ".join(str(choice) for choice in choices)
