"""What a run tells the rest of ablate as it trains: the tracker, the progress bars, the
ledger and the tuner each subclass Observer and override the events they need."""

from __future__ import annotations

from pathlib import Path


class Observer:
    def on_start(self, info: dict) -> None:
        """The run is set up: `info` holds its device, sizes, data description, ..."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Training or validation records of `step`."""

    def before_checkpoint(self, step: int, path: Path) -> None:
        """The checkpoint of `step` is about to be written to `path`."""

    def on_notice(self, name: str, message: str) -> None:
        """Something the user should know about the run (`name`: slowdown, ...), said once."""


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
