"""The errors a user can fix, and how they are said: one line naming the problem and the fix,
exit code 2, nothing written."""


class UsageError(Exception):
    """Bad input: the message names the problem and the fix."""


class DataError(UsageError):
    """Bad data: the message names the file, the line and the fix."""


class Interrupted(Exception):
    """A run stopped by a signal in training, its checkpoint saved (pabee.fine_tuning.loop.StopOnSignal)."""

    def __init__(self, signum, step):
        import signal

        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


def first_line(error):
    """The first line of an exception's message (third-party messages run to several)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# What the disk or its permissions cause, and so what freeing space or fixing permissions mends.
DISK_ERRORS = {"ENOSPC": "free space on its disk", "EDQUOT": "free space within your quota",
               "EACCES": "fix its permissions", "EPERM": "fix its permissions",
               "EROFS": "write somewhere that is not read-only"}


def os_error_line(error):
    """One line for an OSError that ends a run: the advice where the cause is the disk or its
    permissions, else the error as it is (a missing command or file, a refused connection)."""
    import errno

    where = f": {error.filename}" if error.filename else ""
    fix = DISK_ERRORS.get(errno.errorcode.get(error.errno, ""))
    return f"{error.strerror or first_line(error)}{where}" + (f": {fix}, then run again" if fix else "")
