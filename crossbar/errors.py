"""The one exception type users see for bad input.

A :class:`CrossbarInputError` carries a complete, human-readable message that names the file,
field or value at fault and what is allowed.  The CLI prints it on one line and exits with code 2;
nothing else is caught there, so genuine bugs still show a traceback.
"""


class CrossbarInputError(ValueError):
    """Bad user input: a config, dataset, checkpoint, CLI argument or tensor."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, at most ``limit`` characters;
    the exception's type when it has no message)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
