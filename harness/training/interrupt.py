"""Ctrl-C during training stops at the next step boundary, so the checkpoint written then
resumes exactly the same curve. A second Ctrl-C stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_interrupt():
    """Yields a function telling whether SIGINT arrived since entering."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)
