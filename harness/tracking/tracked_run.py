"""One run's records, as its trainer produces them: params at the start, metrics batched,
artifacts and the final state at the end.

Everything goes through an :class:`~harness.tracking.outbox.Outbox`, so an unreachable
tracking store never stops training and loses nothing: what it could not take is kept in
`outbox_path` and sent later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.notices import warn
from harness.registry import MODEL_SLOTS, lookup
from harness.tracking.lineage import dataset_input
from harness.tracking.outbox import Outbox
from harness.training.observer import Observer


class TrackedRun(Observer):
    """An observer of a trainer that records into one MLflow run."""

    FLUSH_EVERY = 500

    def __init__(self, client, run_id: str, spec: RunSpec, logged_until: dict[str, int],
                 outbox_path: Path | None = None, *, attempt: int = 1, logged_params: dict[str, str] | None = None):
        self.client = client
        self.run_id = run_id
        self.spec = spec
        self.logged_until = logged_until
        self.attempt = attempt  # 1 for a new run, n for its n-th start
        self.logged_params = logged_params or {}  # what earlier attempts recorded: MLflow keeps a param as first set
        self.outbox = Outbox(client, run_id, outbox_path, label=f"{spec.arm} seed={spec.seed}")
        self.pending: list[tuple[str, float, int, int]] = []

    def on_start(self, info: dict) -> None:
        # params: what the run key covers, the same in every attempt; tags: this attempt's execution
        params = dict(self.spec.flat_params())
        params.update({slot: str(getattr(self.spec.model, slot)) for slot in MODEL_SLOTS})
        params.update({key: str(value) for key, value in info.items() if key != "execution"})
        params = {k: v[:6000] for k, v in params.items()}
        changed = sorted(k for k, v in params.items() if k in self.logged_params and self.logged_params[k] != v)
        if changed:
            warn(f"run {self.outbox.label}: {', '.join(changed)} differ from what an earlier attempt recorded; "
                 "MLflow keeps the first values")
        self.outbox.params({k: v for k, v in params.items() if k not in self.logged_params})
        self.outbox.tags(attempt_tags(self.attempt, self.spec, info["execution"]))
        self.outbox.dataset(dataset_input(self.spec, info))
        for slot, name in self.spec.variants():  # the code of plugin variants, as it was when this run trained
            variant = lookup(slot, name)
            if variant.source_text:
                self.outbox.text(f"plugins/{slot}.{name}/{variant.source_file.name}", variant.source_text)
        self.outbox.flush()

    def on_metrics(self, step: int, metrics: dict) -> None:
        now = int(time.time() * 1000)
        # a point logged before an interruption, which the resumed run computed again, is not sent twice
        self.pending += [(key, float(value), now, step) for key, value in metrics.items()
                         if step > self.logged_until.get(key, 0)]
        if "val_loss" in metrics or len(self.pending) >= self.FLUSH_EVERY:
            self.flush()

    def before_checkpoint(self, step: int, path) -> None:
        # every point up to this checkpoint must survive a crash once it is written: what
        # MLflow has not yet confirmed goes to disk first (sending it twice is harmless:
        # MLflow ignores a metric point it already holds); training does not wait for the store
        self.flush()
        self.outbox.keep()

    def on_notice(self, name: str, message: str) -> None:
        self.outbox.tags({name: message[:5000]})

    def flush(self, wait: bool = False) -> bool:
        """Hand the buffered metrics to the background sender; with `wait`, until it is done
        or the store has failed to take them (then they are kept on disk)."""
        if self.pending:
            self.outbox.metrics(self.pending)
            self.pending = []
        return self.outbox.flush(wait)

    def finish(self, result, summary: str, sample: str) -> None:
        """End a run whose training loop ended: finished, or diverged (`result.status`)."""
        tags = {k: str(v) for k, v in result.info.items() if k.startswith(("attention_backend", "kernel_"))}
        # steps_trained: by this execution, fewer than train.steps after a resume
        now = int(time.time() * 1000)
        self.flush()
        self.outbox.metrics([(name, float(result.metrics.get(name, 0.0)), now, result.steps)
                             for name in ("wall_time_s", "steps_trained", "avg_tokens_per_s")])
        self.outbox.text("config.yaml", yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        self.outbox.text("model_summary.txt", summary)
        if sample:
            self.outbox.text("sample.txt", sample)
        self.end(result.status, result.reason, tags)

    def end(self, state: RunState, reason: str = "", tags: dict[str, str] | None = None) -> None:
        """Record the run's final state (and why, when it did not finish) and close it."""
        self.flush()
        tags = {**(tags or {}), "state": state.value}
        if reason:
            tags["failure_reason"] = reason[:5000]
        self.outbox.tags(tags)
        self.outbox.terminate(state.mlflow_status)
        self._close()

    def _close(self) -> None:
        """Send everything now if the store answers; otherwise keep it on disk and say where."""
        if not self.outbox.flush(wait=True):
            where = self.outbox.path or "memory only"
            warn(f"run {self.outbox.label} ended while the tracking store was unreachable "
                  f"({self.outbox.last_error}); {len(self.outbox.records)} records are kept in {where} and "
                  "are sent by the next `ablate run` of this study")
        self.outbox.close()


def attempt_tags(attempt: int, spec: RunSpec, execution: dict) -> dict[str, str]:
    """Tags of one attempt at a run: `execution_*` and `device` describe the latest attempt
    (overwritten by the next), `attempt_<n>` keeps each attempt's settings and where it took
    the run up, as one JSON line."""
    record = {**spec.execution_settings(), **{f"execution_{k}": v for k, v in execution.items()}}
    return {"device": str(execution["device"]), "attempt": str(attempt),
            **{f"execution_{k}": str(v) for k, v in execution.items()},
            f"attempt_{attempt}": json.dumps(record, default=str)[:5000]}
