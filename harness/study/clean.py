"""Free the disk that settled runs no longer need: their checkpoints and locks.

A run is cleaned only when MLflow holds it settled (finished, diverged or pruned): an
interrupted or failed run needs its checkpoint to resume. A run folder that still keeps
tracking records MLflow has not taken is left whole.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.run_state import RunState
from harness.files import study_folder
from harness.tracking.outbox import OUTBOX_NAME
from harness.tracking.tracker import TUNE_KIND, Tracker

# what a settled run's folder holds that nothing reads again
DISPOSABLE = ("checkpoint.pt", "checkpoint.tmp", "*.lock")


@dataclass
class CleanResult:
    removed: list[Path] = field(default_factory=list)
    kept_unsent: list[Path] = field(default_factory=list)  # folders whose records MLflow has not taken
    bytes: int = 0
    dry_run: bool = False

    def lines(self) -> list[str]:
        """What was deleted (or would be) and what was kept, as `ablate clean` prints it."""
        verb = "would delete" if self.dry_run else "deleted"
        return ([f"{verb} {path}" for path in self.removed]
                + [f"kept {folder}: it holds tracking records MLflow has not taken yet (sent by the next `ablate run`)"
                   for folder in self.kept_unsent]
                + [f"{verb} {len(self.removed)} files, {self.bytes / 2**20:.1f} MiB"])


def clean_runs(name: str, tracker: Tracker, runs_dir: Path, dry_run: bool = False) -> CleanResult:
    """Delete (or with `dry_run`, list) the checkpoints and locks of the study's settled runs."""
    result = CleanResult(dry_run=dry_run)
    folder = study_folder(runs_dir, name)
    experiment_id = tracker.experiment_id(name, create=False)
    if experiment_id is None or not folder.is_dir():
        return result
    settled = {key for key, run in tracker.runs_by_key(experiment_id).items() if RunState.of(run.data.tags).settled}
    for run in tracker.find_runs(experiment_id, TUNE_KIND):
        if RunState.of(run.data.tags).settled:  # a trial's folder is named by its key and its first trial
            settled.add(f"tune/{run.data.tags['run_key']}-{run.data.tags['trial']}")
    for key in sorted(settled):
        run_dir = folder / key
        if not run_dir.is_dir():
            continue
        if (run_dir / OUTBOX_NAME).exists():
            result.kept_unsent.append(run_dir)
            continue
        for path in sorted({p for pattern in DISPOSABLE for p in run_dir.glob(pattern)}):
            result.removed.append(path)
            result.bytes += path.stat().st_size
            if not dry_run:
                path.unlink()
        if not dry_run and not any(run_dir.iterdir()):
            shutil.rmtree(run_dir)
    return result
