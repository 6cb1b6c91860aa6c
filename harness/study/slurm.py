"""SLURM: `ablate run STUDY --launcher slurm --jobs N` plans the study and submits N workers as
one SLURM job array through submitit. Each array task is an `ablate worker`: it claims runs from
the study's ledger until none is left, exactly like a worker started by hand.

The ledger and tracking URIs reach the jobs by environment (sbatch exports the submitting
environment), never on a command line or in submitit's pickles. A worker that SLURM cancels,
preempts or times out dies like a killed worker: its trial's heartbeat goes stale, and another
worker continues the run from its checkpoint (the `runs/` folder must be shared).

A worker is asked for SLURM's warning signal (USR2) `signal_delay_s` seconds before its time
limit, and takes it, like the SIGTERM of `scancel` or a preemption, as a stop request: it
checkpoints its run, marks it interrupted, puts it back in the queue and ends cleanly before
SLURM kills it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from harness.environment import environment, usable_cores
from harness.errors import AblateError
from harness.redaction import error_line
from harness.study.executors import Executor

if TYPE_CHECKING:
    from harness.study.study import Study


@dataclass
class SlurmSettings:
    partition: str | None = None
    time: str = "4:00:00"  # per worker: [days-]hours:minutes:seconds, or minutes
    gpus_per_job: int = 0
    cpus_per_job: int | None = None  # default: this machine's cores shared among the workers
    # seconds before the time limit at which SLURM sends USR2 (SLURM may send it up to a minute early)
    signal_delay_s: int = 120

    def minutes(self) -> int:
        """`time` in minutes, as submitit takes it."""
        match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})|(\d+)", self.time.strip())
        if not match:
            raise AblateError(f"--slurm-time '{self.time}': expected hours:minutes:seconds (4:00:00), "
                              "days-hours:minutes:seconds (1-00:00:00) or minutes (240)")
        days, hours, minutes, seconds, only_minutes = match.groups()
        if only_minutes:
            return int(only_minutes)
        return max(1, int(days or 0) * 1440 + int(hours) * 60 + int(minutes) + (int(seconds) > 0))


class SlurmArray(Executor):
    """`jobs` workers submitted to SLURM as one job array; the study is planned here and reported
    by `ablate report` once they are done. Raises AblateError for fewer than one worker or a
    malformed time limit, before anything is planned."""

    trains_here = False
    workers_tune = True

    def __init__(self, jobs: int, settings: SlurmSettings):
        if jobs < 1:
            raise AblateError("--launcher slurm needs --jobs N (N >= 1): how many workers to submit")
        settings.minutes()
        self.jobs, self.settings = jobs, settings

    def start(self, study: Study) -> None:
        array = submit_workers(study, self.jobs, self.settings)
        study.console.print(f"submitted {self.jobs} workers to SLURM as job array {array[0].job_id.split('_')[0]} "
                            f"(logs in {array[0].paths.folder.parent}); watch them with `squeue --me` and "
                            f"`ablate status {study.file}`, then `ablate report {study.name}`", soft_wrap=True)


def submit_workers(study: Study, jobs: int, settings: SlurmSettings):
    """Submit `jobs` workers of `study` (planned or being planned) as a SLURM job array; returns
    the submitit jobs. Raises AblateError when sbatch is missing or refuses them."""
    import submitit

    folder = study.runs_dir.resolve() / study.name / "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    cpus = settings.cpus_per_job or max(1, usable_cores() // jobs)
    executor.update_parameters(name=f"ablate-{study.name}", timeout_min=settings.minutes(), nodes=1,
                               tasks_per_node=1, cpus_per_task=cpus, slurm_array_parallelism=jobs,
                               slurm_signal_delay_s=settings.signal_delay_s,
                               **({"gpus_per_node": settings.gpus_per_job} if settings.gpus_per_job else {}),
                               **({"slurm_partition": settings.partition} if settings.partition else {}))
    arguments = [(str(study.file.resolve()), study.overrides, study.profile, study.plugins, str(study.runs_dir.resolve()))
                 for _ in range(jobs)]
    with environment({"MLFLOW_TRACKING_URI": study.tracker.uri, "ABLATE_STORAGE": study.storage}):
        try:
            return executor.map_array(run_worker, *zip(*arguments))
        except Exception as err:  # sbatch missing or refusing: the message is the first line
            raise AblateError(f"SLURM refused the workers ({error_line(err)}); check --slurm-partition and --slurm-time "
                              "against `sinfo`") from None


def run_worker(study_file: str, overrides: list[str], profile: str | None, plugins: list[str], runs_dir: str) -> str:
    """One array task: an `ablate worker` of the study, with the threads SLURM gave it. SIGTERM
    and the warning signal before the time limit stop it cleanly (submitit's own handlers would
    only log SIGTERM and requeue the whole task)."""
    import signal

    from harness.training import interrupt

    # first: SLURM may send its warning up to a minute early, while torch is still importing
    interrupt.install(extra=(signal.SIGUSR2,))
    try:
        import torch

        from harness.study.study import Study

        if os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        study = Study.load(Path(study_file), overrides, profile, plugins, storage=os.environ["ABLATE_STORAGE"],
                           runs_dir=runs_dir)
        outcome = study.work()
    except KeyboardInterrupt as stop:
        name = signal.Signals(getattr(stop, "signum", signal.SIGINT)).name
        print(f"stopped by {name}: the run in progress is checkpointed, marked interrupted and queued again")
        return f"stopped by {name}"
    return f"{outcome.trained} runs trained, {outcome.done_already} found finished"
