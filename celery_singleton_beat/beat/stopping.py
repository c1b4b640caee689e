"""A stop signal waits for the slots in flight: claimed, published, told and marked done.

``celery beat`` stops on SIGTERM and SIGINT by raising :class:`SystemExit` from the signal
handler, wherever the main thread happens to be. Raised between the publish of a slot and
its done mark, it would leave a message sent but uncounted by the schedule source and its
fence claimed, until another replica sends the slot again (a rolling restart that stops
every replica at once would leave it so until one comes back). While a chunk of slots is
dispatched the first stop signal is held and delivered as soon as the chunk is finished;
a second one stops the process at once, as an operator pressing Ctrl-C twice expects.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, then deliver the first one caught.

    Only the main thread receives signals in Python; elsewhere (beat embedded in a worker
    thread) the block runs as is. A handler installed outside Python (``None`` from
    :func:`signal.getsignal`) is left alone: it could not be put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    previous = {s: handler for s, handler in previous.items() if handler is not None}

    def hold(signum: int, frame: FrameType | None) -> None:
        if caught:  # the second stop signal: at once
            restore()
            signal.raise_signal(signum)
        caught.append(signum)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    for signum in previous:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        restore()
        if caught:
            signal.raise_signal(caught[0])
