"""How a planned study's runs are trained: here, by local worker processes, or elsewhere (the
study is only planned; a SLURM job array is harness.study.slurm.SlurmArray). `Study.run` calls an executor's three
methods in this order; a new launcher is one class with them, passed as `Study.run(executor=...)`.

    start(study)   before tuning: start or submit workers (they tune, then train what is queued)
    train(study)   train the current plan's queued runs, returning once none is left;
                   called again when a sequential study adds seeds
    stop()         on an error or a stop request: each worker checkpoints its run and ends
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import AblateError
from harness.study import launch
from harness.study.worker import work

if TYPE_CHECKING:
    from harness.study.study import Study


class Executor:
    """Trains nothing itself; subclasses say how. `trains_here` is False when the runs are
    trained by workers the study does not wait for (then `ablate report` reports them once
    they are done); `workers_tune` is True when started workers spend the tuning budget
    alongside, so the study waits for them before planning."""

    trains_here = True
    workers_tune = False

    def start(self, study: Study) -> None:
        pass

    def train(self, study: Study) -> None:
        pass

    def stop(self) -> None:
        pass


class Inline(Executor):
    """Train every queued run in this process, one after another (`--jobs 1`)."""

    def train(self, study: Study) -> None:
        outcome = work(study.runs, study.spec.report.metric, study.tracker, study.ledger, study.runs_dir, study.console,
                       inputs=study.inputs)
        study.console.print(f"{outcome.trained} runs trained")


class LocalWorkers(Executor):
    """`jobs` `ablate worker` processes on this machine, each with its share of the cores
    (harness.study.launch)."""

    workers_tune = True

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.workers: list = []

    def start(self, study: Study) -> None:
        self.workers = launch.start_workers(self.jobs, study.file, study.overrides, study.plugins, study.profile,
                                            study.tracker.uri, study.storage, study.runs_dir)

    def train(self, study: Study) -> None:
        if not self.workers:  # the ones started first left when the queue was empty: a new look needs new ones
            self.start(study)
        launch.wait_for(self.workers)
        self.workers = []

    def stop(self) -> None:
        launch.stop(self.workers)


class PlanOnly(Executor):
    """Plan the study and say how to start workers (`--jobs 0`): `ablate worker`s on any
    machine that reaches the stores train it."""

    trains_here = False
    workers_tune = True

    def start(self, study: Study) -> None:
        study.console.print(f"start workers with: {study.worker_command()}", soft_wrap=True)


def local_executor(jobs: int) -> Executor:
    """The executor `ablate run --jobs N` asks for: inline (1), N local workers, or plan only (0)."""
    if jobs == 0:
        return PlanOnly()
    return Inline() if jobs == 1 else LocalWorkers(jobs)
