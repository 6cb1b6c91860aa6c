"""What a run tells the rest of ablate as it trains: the tracker, the progress bars, the
ledger and the tuner each subclass Observer and override the events they need.

Observers come in two kinds. The tracker and the tuner's pruner decide what happens to the
run: what they raise ends it. A progress bar or a heartbeat only reports: it is wrapped in
:class:`Reporting`, and its failure is one warning line while training goes on.
"""

from __future__ import annotations

from pathlib import Path

from harness.notices import warn
from harness.redaction import error_line


class Observer:
    def on_start(self, info: dict) -> None:
        """The run is set up: `info` holds its device, sizes, data description, ..."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Training or validation records of `step`."""

    def before_checkpoint(self, step: int, path: Path) -> None:
        """The checkpoint of `step` is about to be written to `path`."""

    def on_notice(self, name: str, message: str) -> None:
        """Something the user should know about the run (`name`: slowdown, ...), said once."""

    def close(self) -> None:
        """The run is over, however it ended."""


class Observers(Observer):
    """Fans one run's events out to several observers (tracker, progress bar, ...)."""

    def __init__(self, *observers: Observer | None):
        self.observers = [o for o in observers if o is not None]

    def on_start(self, info):
        for o in self.observers:
            o.on_start(info)

    def on_metrics(self, step, metrics):
        for o in self.observers:
            o.on_metrics(step, metrics)

    def before_checkpoint(self, step, path):
        for o in self.observers:
            o.before_checkpoint(step, path)

    def on_notice(self, name, message):
        for o in self.observers:
            o.on_notice(name, message)

    def close(self):
        for o in self.observers:
            o.close()


class Reporting(Observer):
    """An observer that only reports (a progress bar, a status heartbeat): an exception in any
    of its hooks is said once, as a warning naming `what`, and the observer is then left out;
    the run goes on. Interrupts (Ctrl-C, SIGTERM) still pass."""

    def __init__(self, observer: Observer, what: str):
        self.observer = observer
        self.what = what
        self.failed = False

    def _call(self, hook: str, *args) -> None:
        if self.failed:
            return
        try:
            getattr(self.observer, hook)(*args)
        except Exception as err:
            self.failed = True
            warn(f"{self.what} failed ({type(err).__name__}: {error_line(err, 200)}); it is left out and training "
                 "goes on")

    def on_start(self, info):
        self._call("on_start", info)

    def on_metrics(self, step, metrics):
        self._call("on_metrics", step, metrics)

    def before_checkpoint(self, step, path):
        self._call("before_checkpoint", step, path)

    def on_notice(self, name, message):
        self._call("on_notice", name, message)

    def close(self):
        self._call("close")
