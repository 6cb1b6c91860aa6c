"""One run, opened to ended: the same lifecycle for a comparison run and a tuning trial.

    outcome = train_tracked(spec, run_dir, tracker, parent_run_id, progress, kind=RUN_KIND)

- A run MLflow holds as settled (finished, diverged, pruned) is not trained again: its
  outcome is read back.
- An earlier attempt that did not settle (interrupted by Ctrl-C, killed, preempted, or
  failed) continues from its checkpoint in the same MLflow run.
- Finished or diverged: recorded with its artifacts (MLflow FINISHED / FAILED).
- :class:`~harness.training.faults.RunFailed` (out of memory, an unusable checkpoint): FAILED
  with the reason; the caller goes on, and the next `ablate run` tries the run again.
- :class:`RunPruned`, raised by an observer (the tuner's pruner): PRUNED.
- A local file fault (no space, no permission, a name too long): FAILED, and raised as a
  :class:`~harness.errors.FileFault` naming the path; the study stops.
- Ctrl-C or anything else: INTERRUPTED (MLflow KILLED), after the trainer's checkpoint,
  and raised again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.errors import AblateError, file_fault
from harness.model.generate import sample_text
from harness.notices import warn
from harness.progress import RunProgress
from harness.redaction import error_line
from harness.tracking.outbox import OUTBOX_NAME
from harness.tracking.tracker import Tracker
from harness.training.build import RunInputs
from harness.training.faults import RunFailed
from harness.training.observer import Observers, Reporting
from harness.training.trainer import Trainer


class RunPruned(Exception):
    """Raised by an observer to stop a run early on purpose; the message says why."""


@dataclass
class RunOutcome:
    state: RunState
    metrics: dict[str, float] = field(default_factory=dict)
    trained: bool = True  # False: MLflow had the run settled already
    reason: str = ""

    def headline(self) -> str:
        """Its final losses, bits per byte, exact match and throughput, as `name=value, ...`."""
        return ", ".join(f"{name}={self.metrics[name]:.4g}" for name in
                         ("train_loss", "val_loss", "val_bpb", "val_exact_match", "avg_tokens_per_s") if name in self.metrics)

    def check(self) -> None:
        """Raise AblateError for a run that diverged (saying what to change) or failed."""
        if self.state == RunState.DIVERGED:
            raise AblateError(f"the run diverged: {self.reason}; its curve up to then is kept. Lower train.lr or "
                              "add warmup")
        if self.state == RunState.FAILED:
            raise AblateError(f"the run failed: {self.reason}")


def train_tracked(spec: RunSpec, run_dir: Path, tracker: Tracker, parent_run_id: str, progress, *, kind: str,
                  identity: dict[str, str] | None = None, name: str | None = None,
                  tags: dict[str, str] | None = None, observers: tuple = (),
                  inputs: RunInputs | None = None) -> RunOutcome:
    """Train `spec` in `run_dir`, tracked as a child of `parent_run_id`.

    `identity` (tags; default the run key) finds an earlier attempt at the same run; `name`
    and `tags` label a new MLflow run; `observers` see the trainer's events beside the
    tracker and the progress bar; `inputs` shares data and starting weights between runs.
    """
    experiment_id = tracker.experiment_id(spec.study)
    identity = identity or {"run_key": spec.key()}
    prior = tracker.patiently(lambda: tracker.find_run(experiment_id, kind, identity), "looking up a run")
    if prior is not None and RunState.of(prior.data.tags).settled:
        return RunOutcome(RunState.of(prior.data.tags), dict(prior.data.metrics), trained=False)
    label = name or f"{spec.arm} seed={spec.seed}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)  # before the MLflow run: a folder that cannot be made stops here
    except OSError as err:
        raise file_fault(err, run_dir) or err from None

    def open_run():
        # a retry after a lost reply finds the run the store did create: one MLflow run per run key
        existing = prior or tracker.find_run(experiment_id, kind, identity)
        return tracker.open_run(experiment_id, parent_run_id, spec, kind=kind, name=label,
                                tags={**identity, **(tags or {})}, existing=existing,
                                outbox_path=run_dir / OUTBOX_NAME)

    tracked = tracker.patiently(open_run, "starting a run")
    progress_bar = RunProgress(progress, label, spec.train.steps)
    bar = Reporting(progress_bar, f"the progress bar of {label}")
    try:
        trainer = Trainer(spec, run_dir, Observers(tracked, bar, *observers), inputs)
        result = trainer.run()
    except RunFailed as fault:
        tracked.end(RunState.FAILED, str(fault))
        progress.console.print(f"[yellow]failed:[/] {escape(label)}: {escape(str(fault))}")
        return RunOutcome(RunState.FAILED, reason=str(fault))
    except RunPruned as pruned:
        tracked.end(RunState.PRUNED, str(pruned))
        return RunOutcome(RunState.PRUNED, dict(progress_bar.latest), reason=str(pruned))
    except BaseException as err:
        fault = file_fault(err)
        if fault is None:  # Ctrl-C, a kill, an outage that outlasted the patience, a bug
            tracked.end(RunState.INTERRUPTED)
            raise
        tracked.end(RunState.FAILED, str(fault))  # a disk or permission fault: stop the study, naming the path
        raise fault from None
    finally:
        bar.close()
    # a diverged model's sample says nothing (and its logits may not even make probabilities)
    sample = training_sample(trainer) if result.status == RunState.FINISHED else ""
    tracked.finish(result, trainer.model.summary(), sample)
    return RunOutcome(result.status, result.metrics, reason=result.reason)


def training_sample(trainer: Trainer) -> str:
    """A short sample logged with a finished run (none for tasks such as addition). It only
    reports: when it cannot be made, a warning says so and the run is recorded without it."""
    if trainer.dataset.exact_match:
        return ""
    trainer.model.eval()
    tokenizer = trainer.dataset.tokenizer
    try:
        prompt = "\n" if _encodes(tokenizer, "\n") else tokenizer.decode([0])  # a vocabulary without a newline
        return sample_text(trainer.model, tokenizer, prompt, 300, temperature=0.8, top_k=50, seed=0)
    except Exception as err:
        warn(f"no text sample for run {trainer.spec.arm} seed={trainer.spec.seed} ({error_line(err, 200)})")
        return ""


def _encodes(tokenizer, text: str) -> bool:
    try:
        tokenizer.encode(text)
    except AblateError:
        return False
    return True
