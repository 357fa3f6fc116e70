"""Exceptions that end a run with a message instead of a traceback."""

from model_hinge.errors import HingeError


class UsageError(HingeError):
    """A bad flag, missing file or incompatible checkpoint of the CLI: reported like the library's HingeError."""


class NonFiniteError(Exception):
    """Training produced NaN or inf; the message names the epoch and batch."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stopped at a batch boundary (exit status 128 + signal number)."""

    def __init__(self, signum: int, where: str):
        super().__init__(where)
        self.signum, self.where = signum, where
