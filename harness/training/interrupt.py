"""Stop requests: Ctrl-C (SIGINT), SIGTERM (`kill`, `timeout`, `scancel`, a container stop, a
SLURM time limit or preemption) and SLURM's warning signal before a time limit are one request:
checkpoint, mark the run interrupted, end the execution's parent run, exit 128 + the signal.

During training the first request stops the loop at the next step boundary, so the checkpoint
written then resumes exactly the same curve; a second stops at once. While the model and
optimizer are built the first request waits too: native code (Triton, torch._dynamo) calls back
into Python then, and an exception raised inside such a callback aborts the process. Elsewhere
(planning, reporting) a request raises at once. A request is also remembered: a library that
swallows the exception it raised (some catch BaseException while they create a store) does not
swallow the request, which :func:`honour` raises again at the next safe point.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # stop requests this process has had, oldest first
# signals that may come several times for one reason and so never stop at once: Linux sends the
# parent-death signal again each time a thread of the dying parent exits
_soft: set[int] = set()
_soft_raised = False


class Interrupted(KeyboardInterrupt):
    """A stop request by signal `signum`; a KeyboardInterrupt, so every path that handles
    Ctrl-C (checkpoint, mark interrupted, end the parent run) handles it alike."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    global _soft_raised
    if signum in _soft:
        if _soft_raised:  # the same request again: it is being honoured
            return
        _soft_raised = True
    _received.append(signum)
    raise Interrupted(signum)


def install(extra: tuple[int, ...] = (), soft: tuple[int, ...] = ()) -> None:
    """Make SIGINT, SIGTERM and `extra` signals (SLURM's warning signal) stop requests of this
    process (its main thread), and `soft` ones too, whose repeats are one request. The command
    line and every worker call it first."""
    if threading.current_thread() is not threading.main_thread():
        return
    _soft.update(soft)
    for signum in (*STOP_SIGNALS, *extra, *soft):
        signal.signal(signum, _raise)
    if sys.unraisablehook is not _quiet_when_remembered:
        _quiet_when_remembered.previous = sys.unraisablehook
        sys.unraisablehook = _quiet_when_remembered


def _quiet_when_remembered(unraisable) -> None:
    """A stop request raised where Python cannot raise it (a garbage-collection or weakref
    callback) is not printed as "Exception ignored": it is remembered and honoured next."""
    if isinstance(unraisable.exc_value, Interrupted):
        return
    _quiet_when_remembered.previous(unraisable)


def honour() -> None:
    """Raise the stop request that arrived earlier, if any (one a library swallowed). The
    exception then carries it: a notebook that catches it may train again."""
    if _received:
        signum = _received[0]
        _received.clear()
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred_interrupt():
    """Yields a function telling whether a stop was requested (since entering, or before and
    swallowed): the training loop asks it at every step boundary."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: bool(_received)
        return
    here: list[int] = []

    def handler(signum, frame):
        if here:
            if signum in _soft:
                return
            raise Interrupted(signum)
        here.append(signum)
        _received.append(signum)

    watched = (*STOP_SIGNALS, *(s for s in _extra_installed() if s not in STOP_SIGNALS))
    previous = {signum: signal.signal(signum, handler) for signum in watched}
    try:
        yield lambda: bool(_received)
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def _extra_installed() -> list[int]:
    """Signals besides SIGINT and SIGTERM that :func:`install` made stop requests."""
    return [s for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP) if signal.getsignal(s) is _raise]


class _Hold:
    def __init__(self):
        self.previous: dict | None = None

    def restore(self) -> None:
        for signum, before in (self.previous or {}).items():
            signal.signal(signum, before)
        self.previous = None

    def release(self) -> None:
        """Stop holding: a request that came meanwhile is raised here (Interrupted)."""
        if self.previous is not None:
            self.restore()
            honour()


@contextlib.contextmanager
def held():
    """Hold stop requests until `release()` (or the end of the block), then raise the one that
    came. For library code that starts a thread and joins it only once its own block is
    entered: Optuna's trial heartbeat is a non-daemon thread started in `__enter__`, and a stop
    raised there leaves it beating for ever, so the process never exits. A second request
    raises at once."""
    hold = _Hold()
    if threading.current_thread() is threading.main_thread():
        here: list[int] = []

        def handler(signum, frame):
            if here and signum not in _soft:
                raise Interrupted(signum)
            here.append(signum)
            _received.append(signum)

        watched = (*STOP_SIGNALS, *(s for s in _extra_installed() if s not in STOP_SIGNALS))
        hold.previous = {signum: signal.signal(signum, handler) for signum in watched}
    try:
        yield hold
    except BaseException:
        hold.restore()
        raise
    hold.release()
