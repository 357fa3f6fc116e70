"""Exceptions that end a run with a message instead of a traceback."""


class UsageError(Exception):
    """A bad flag, missing file or incompatible checkpoint: reported in one sentence, exit status 2."""


class NonFiniteError(Exception):
    """Training produced NaN or inf; the message names the epoch and batch."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stopped at a batch boundary (exit status 128 + signal number)."""

    def __init__(self, signum: int, where: str):
        super().__init__(where)
        self.signum, self.where = signum, where
