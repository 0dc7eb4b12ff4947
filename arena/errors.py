"""The usage error: bad input or settings. Both scripts print its one-line message and exit with code 1."""


class DataError(Exception):
    """Bad input or settings: the message is one line naming what is wrong (for data: file, row, column, problem)."""
