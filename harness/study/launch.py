"""Local worker processes: `ablate run --jobs N` starts N `ablate worker`s on this machine.

The storage and tracking URLs go to them by environment, not on their command line, where
any user of the machine could read a password.

The workers hear a stop only from their parent: they run in a session of their own, so a
terminal's Ctrl-C reaches the parent alone, which forwards one SIGTERM to each and waits
while they checkpoint (a worker given two signals would stop at once, mid-step). A parent
that dies without forwarding (SIGKILL) still stops them: each asks the kernel for SIGHUP when
its parent goes (Linux's parent-death signal, which comes once per exiting thread of the
parent and so counts as one request however often it comes), so nothing trains on orphaned.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness.environment import usable_cores
from harness.errors import AblateError
from harness.training import interrupt


def start_workers(jobs: int, study_file: Path, overrides: list[str], plugins: list[str], profile: str | None,
                  tracking_uri: str, storage: str, runs_dir: Path) -> list[subprocess.Popen]:
    """`jobs` worker processes, one GPU each when there are GPUs, and each its share of the
    CPU cores: PyTorch would give every process a thread per core, and processes fighting
    over the cores run several times slower than one alone."""
    threads = str(max(1, usable_cores() // jobs))
    command = [sys.executable, "-m", "harness.cli", "worker", str(study_file), "--runs-dir", str(runs_dir)]
    command += [a for s in overrides for a in ("--set", s)] + [a for p in plugins for a in ("--plugin", p)]
    command += ["--profile", profile] if profile else []
    gpus = torch.cuda.device_count()
    workers = []
    for index in range(jobs):
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "ABLATE_STORAGE": storage,
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, PARENT_VARIABLE: str(os.getpid())}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        workers.append(subprocess.Popen(command, env=env, start_new_session=True))
    return workers


PARENT_VARIABLE = "ABLATE_PARENT_PID"
STOP_GRACE_SECONDS = 120.0  # for a worker to finish its step, checkpoint and tell MLflow
_PR_SET_PDEATHSIG = 1


def follow_parent() -> None:
    """In a worker started by :func:`start_workers`: be sent SIGHUP, a stop request, when the
    parent dies, and stop now if it died already."""
    parent = os.environ.get(PARENT_VARIABLE)
    if not parent or not sys.platform.startswith("linux"):
        return
    interrupt.install(soft=(signal.SIGHUP,))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0)
    if os.getppid() != int(parent):  # it died before the request was made
        os.kill(os.getpid(), signal.SIGHUP)


def wait_for(workers: list[subprocess.Popen]) -> None:
    """Wait until every worker has ended; a stop request that a library swallowed meanwhile is
    honoured (the caller then stops the workers)."""
    while any(process.poll() is None for process in workers):
        interrupt.honour()
        time.sleep(0.5)
    codes = [process.returncode for process in workers]
    if any(codes):
        raise AblateError(f"{sum(1 for c in codes if c)} of {len(workers)} workers failed (exit codes {codes}); "
                          "run the same command again to finish the study")


def stop(workers: list[subprocess.Popen], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """Forward a stop to the workers (SIGTERM: each checkpoints its run and marks it
    interrupted) and wait for them; a worker still running after `grace_seconds` is killed."""
    for process in workers:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in workers:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
