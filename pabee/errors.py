"""The errors a user can fix, and how they are said: one line naming the problem and the fix,
exit code 2, nothing written."""


class UsageError(Exception):
    """Bad input: the message names the problem and the fix."""


class DataError(UsageError):
    """Bad data: the message names the file, the line and the fix."""


def first_line(error):
    """The first line of an exception's message (third-party messages run to several)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
