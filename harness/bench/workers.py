"""`ablate bench workers`: one small study with the main study's shape, run from scratch with
`--jobs 1, 2, ...` up to the machine's cores, each in a fresh folder; runs per hour and the
ratio to `--jobs 1`. Local workers share the cores (harness.study.launch): on 2 cores
`--jobs 2` should not be slower than `--jobs 1`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.environment import usable_cores

# norm_placement's model and batch, fewer steps: 2 arms x SEEDS seeds
STUDY = """
name: bench_workers
base:
  model: {n_layer: 6, d_model: 128, n_head: 4, context_length: 64}
  train: {steps: STEPS, batch_size: 16, lr: 3.0e-3, eval_interval: STEPS}
data: {dataset: pydoc, tokenizer: char}
grid: {model.placement: [pre, post]}
seeds: SEEDS
"""


def workers(steps: int = 100, max_jobs: int | None = None, seeds: int = 3) -> str:
    cores = usable_cores()
    rows = []
    for jobs in range(1, (max_jobs or cores) + 1):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "study.yaml").write_text(STUDY.replace("STEPS", str(steps)).replace("SEEDS", str(seeds)))
            env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ABLATE_STORAGE")}
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "study.yaml", "--jobs", str(jobs)],
                                  cwd=folder, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"--jobs {jobs} failed: {done.stderr.strip().splitlines()[-1:]}")
        rows.append({"jobs": jobs, "threads per worker": max(1, cores // jobs) if jobs > 1 else cores,
                     "wall time (s)": round(seconds, 1), "runs per hour": round(2 * seeds * 3600 / seconds, 1)})
    table = pd.DataFrame(rows)
    table["vs --jobs 1"] = (table["runs per hour"] / table["runs per hour"].iloc[0]).round(2)
    return (f"{2 * seeds} runs of {steps} steps (norm_placement's shape) on {cores} cores, from scratch per row "
            "(setup and report included)\n" + table.to_markdown(index=False))
