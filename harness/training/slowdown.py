"""Noticing a run that crawls: on a machine whose cores another process takes, a step can take
ten times its usual time, and a study that should take minutes takes an hour with nothing said.

The watch compares each logged interval's time per step with the median of the run's own
recent normal intervals; once steps have been `factor` times slower for `patience_s`
seconds, it says so once (the trainer passes it to the progress line and a run tag).
"""

from __future__ import annotations

import statistics
from collections import deque

from harness.environment import seconds_from

FACTOR = 3.0
WINDOW = 20  # normal intervals the median is taken over


class SlowdownWatch:
    def __init__(self, factor: float = FACTOR, patience_s: float | None = None, window: int = WINDOW):
        self.factor = factor
        # seconds of slow steps before the notice; $ABLATE_SLOWDOWN_PATIENCE sets it (the tests use 1)
        self.patience_s = seconds_from("ABLATE_SLOWDOWN_PATIENCE", 30) if patience_s is None else patience_s
        self.normal: deque[float] = deque(maxlen=window)
        self.slow_for = 0.0  # seconds spent in slow intervals in a row
        self.said = False

    def observe(self, step_ms: float, seconds: float) -> str | None:
        """One interval: its time per step and its length. A message the first time the run
        has been slow for long, else None."""
        usual = statistics.median(self.normal) if len(self.normal) >= 3 else None
        if usual is None or step_ms <= self.factor * usual:
            self.normal.append(step_ms)
            self.slow_for = 0.0
            return None
        self.slow_for += seconds
        if self.said or self.slow_for < self.patience_s:
            return None
        self.said = True
        return (f"steps take {step_ms / usual:.1f}x their usual time ({step_ms:.0f} ms, usually {usual:.0f} ms) "
                f"for {self.slow_for:.0f} s: another process may be using the cores (see train.threads)")
