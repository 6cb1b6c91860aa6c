"""A worker of a study: claims queued runs from the ledger one at a time and trains each
through the run lifecycle, until no run is waiting or running anywhere.

Any number of workers can serve one study: `ablate run --jobs N` starts them on this
machine, `ablate worker` on any machine that shares the ledger and the tracking store.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.errors import AblateError
from harness.progress import make_progress
from harness.study.ledger import Ledger, heartbeat_seconds
from harness.study.lifecycle import train_tracked
from harness.tracking.tracker import RUN_KIND, Tracker
from harness.training.build import RunInputs
from harness.training.interrupt import honour
from harness.training.observer import Observer, Reporting


@dataclass
class WorkerOutcome:
    trained: int = 0
    done_already: int = 0


class LedgerProgress(Observer):
    """An observer that records a run's latest step on its ledger trial, at most once per
    heartbeat interval, so that `ablate status` can say how far it is and when it last moved."""

    def __init__(self, trial, total_steps: int):
        self.trial = trial
        self.total_steps = total_steps
        self.last = 0.0

    def on_metrics(self, step: int, metrics: dict) -> None:
        now = time.time()
        if now - self.last >= heartbeat_seconds() or step == self.total_steps:
            self.trial.set_user_attr("progress", {"step": step, "steps": self.total_steps, "at": now})
            self.last = now


def work(specs: list[RunSpec], metric: str, tracker: Tracker, ledger: Ledger, runs_dir: Path,
         console: Console, poll_seconds: float = 2.0, inputs: RunInputs | None = None) -> WorkerOutcome:
    """Claim and train queued runs of the study until none is waiting or running anywhere;
    `inputs` shares their data and starting weights."""
    by_key = {spec.key(): spec for spec in specs}
    study = specs[0].study
    outcome = WorkerOutcome()

    with make_progress(console) as progress:
        claimed = progress.add_task(f"study {study}: runs claimed by this worker", total=None, status="")
        parent_run_id = ledger.parent_run_id()

        def train(trial, key: str) -> tuple[RunState, float | None]:
            if key not in by_key:
                raise AblateError(f"the ledger holds run {key}, which this study file does not plan; start workers "
                                  "with the same study file, --set and --profile as `ablate run`")
            spec = by_key[key]
            # what earlier runs kept while the store was away goes first
            tracker.patiently(lambda: tracker.send_kept(runs_dir / study), "sending kept records")
            heartbeat = Reporting(LedgerProgress(trial, spec.train.steps), "the ledger heartbeat")
            result = train_tracked(spec, runs_dir / study / key, tracker, parent_run_id, progress, kind=RUN_KIND,
                                   observers=(heartbeat,), inputs=inputs)
            if result.trained:
                outcome.trained += 1
            else:
                outcome.done_already += 1
            with contextlib.suppress(Exception):  # a progress line never stops a study
                last = f"last: {spec.arm} seed {spec.seed} {result.state.value}"
                progress.update(claimed, advance=1, status=escape(last))
            return result.state, result.metrics.get(metric)

        while True:
            honour()  # a stop request a library swallowed ends the worker before its next run
            open_runs, waiting = ledger.has_open_runs()
            if not open_runs:
                return outcome
            if not waiting:
                time.sleep(poll_seconds)  # a run in flight elsewhere may still fail and come back
                continue
            ledger.run_next(train)
