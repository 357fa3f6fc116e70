"""The one exception the library raises for input it cannot use."""


class HingeError(ValueError):
    """A plan, model or option the library cannot use; the CLI reports it in one sentence with exit status 2."""
