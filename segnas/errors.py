"""The one error type for user mistakes: the CLI prints its message in one line and exits 2."""


class SegnasError(Exception):
    """A user-facing error that names the file, field or value at fault and what was expected."""
