"""Error types shared by every subpackage."""


class AscSearchError(Exception):
    """Base class of the errors asc-search raises on purpose."""


class UserInputError(AscSearchError, ValueError):
    """A user mistake (bad path, bad column, bad value): the CLI prints it on one line, exit code 2.

    The message names the bad value and says how to fix it.
    """
