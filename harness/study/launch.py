"""Local worker processes: `ablate run --jobs N` starts N `ablate worker`s on this machine.

The storage and tracking URLs go to them by environment, not on their command line, where
any user of the machine could read a password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from harness.environment import usable_cores
from harness.errors import AblateError


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
               "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        workers.append(subprocess.Popen(command, env=env))
    return workers


def wait_for(workers: list[subprocess.Popen]) -> None:
    codes = [process.wait() for process in workers]
    if any(codes):
        raise AblateError(f"{sum(1 for c in codes if c)} of {len(workers)} workers failed (exit codes {codes}); "
                          "run the same command again to finish the study")


def stop(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        process.terminate()
