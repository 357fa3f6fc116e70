"""The one exception type for problems a user can fix from the command line."""


class UsageError(Exception):
    """A bad flag, missing file or incompatible checkpoint: reported in one sentence, exit status 2."""


class NonFiniteError(Exception):
    """Training produced NaN or inf; the message names the epoch and batch."""
