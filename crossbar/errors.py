"""The one exception type users see for bad input.

A :class:`CrossbarInputError` carries a complete, human-readable message that names the file,
field or value at fault and what is allowed.  The CLI prints it on one line and exits with code 2;
nothing else is caught there, so genuine bugs still show a traceback.
"""


class CrossbarInputError(ValueError):
    """Bad user input: a config, dataset, checkpoint, CLI argument or tensor."""
