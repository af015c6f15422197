"""One exception type for mistakes a user can fix, so the CLI prints one line instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment; the message says what to do."""
