"""SIGINT and SIGTERM stop a run cleanly: the current batch finishes, the last committed epoch stays the
resume point, and the process exits with the command that resumes it. A second signal stops at once."""

import contextlib
import signal
from collections.abc import Iterator

from utils.distributed import World, any_process
from utils.errors import Interrupted

_received: list[int] = []


def _handler(signum, frame) -> None:
    if _received:
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt
    _received.append(signum)


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """Catch SIGINT and SIGTERM inside the block; the previous handlers come back after it."""
    _received.clear()
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_if_asked(where: str) -> None:
    """Raise Interrupted if a signal arrived; `where` says what was running."""
    if _received:
        raise Interrupted(_received[0], where)


def stop_together(where: str, world: World) -> None:
    """At a point every process reaches: stop all of them if any of them received a signal."""
    if any_process(bool(_received), world):
        raise Interrupted(_received[0] if _received else signal.SIGTERM, where)
