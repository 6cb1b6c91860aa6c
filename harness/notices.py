"""What ablate tells a person while it works, said so that saying it never stops the work.

A study's stderr may be a closed pipe (`ablate run ... 2>&1 | head`), a full log disk or a
terminal that went away; a progress bar, a notice or a plot may hit a bug of its own. None of
that may cost a run: a reporting path that fails says so once, as one warning line, and
training, tracking and the ledger go on (:class:`harness.training.observer.Reporting`).
"""

from __future__ import annotations

import io
import sys

from rich.console import Console
from rich.file_proxy import FileProxy


class TolerantStream(io.TextIOBase):
    """A text stream over `target` (default: the current sys.stderr) whose writes never raise:
    once the stream fails (a closed pipe, a full disk), what is written to it is dropped."""

    def __init__(self, target=None):
        self._target = target
        self.broken = False

    @property
    def target(self):
        target = self._target or sys.stderr
        if target is None:  # stderr closed at start (`2>&-`): nothing can be said
            self.broken = True
        # while a rich progress bar is live on a terminal, sys.stderr is rich's proxy, which
        # prints through the console that writes here: write to the stream it stands for, or
        # the console would write into itself for ever
        while isinstance(target, FileProxy):
            target = target.rich_proxied_file
        return target

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.target.write(text)
            except (OSError, ValueError, AttributeError):  # ValueError: the stream was closed
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.target.flush()
            except (OSError, ValueError, AttributeError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return self.target.isatty()
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self.target.fileno()


def make_console() -> Console:
    """A rich console on stderr that never raises when stderr cannot be written."""
    return Console(file=TolerantStream(), stderr=True)


def say(line: str) -> None:
    """One line on stderr, dropped if stderr cannot be written."""
    TolerantStream().write(f"{line}\n")


def warn(message: str) -> None:
    """One warning line on stderr, dropped if stderr cannot be written."""
    say(f"warning: {message}")
