"""MLflow tracking: experiment = study, one parent run per execution of the study, one child
run per arm x seed.

Runs are found again by their run key (a tag), which is how a re-run skips finished runs and
continues interrupted ones in the same MLflow run. A run's records are buffered and sent by
a background thread (harness/outbox.py), so the training loop never waits on the tracking
store; at checkpoints they are waited for, and what the store could not take is kept on
disk, so neither a crash nor an outage of the tracking server loses a metric point.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from harness.errors import AblateError
from harness.redaction import redact
from harness.outbox import Outbox, send_kept
from harness.registry import MODEL_SLOTS
from harness.spec import RunSpec

RUN_KIND = "arm_run"
TUNE_KIND = "tune_trial"
STUDY_KIND = "study"
DONE_STATES = ("finished", "diverged")  # a re-run does not train these again
REPORTED_STATES = (*DONE_STATES, "failed")  # failed: out of memory or an unusable checkpoint; retried


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def _quick_http_failures():
    # MLflow retries an unreachable server for minutes by default; a start-up check should not
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# how long a study waits for a tracking store that stopped answering before it gives up
PATIENCE_SECONDS = float(os.environ.get("ABLATE_TRACKING_PATIENCE", "600"))


def _connect_once(uri: str) -> None:
    """Open and close one connection to a database store: MLflow itself retries a refused
    connection for about two minutes before it says so."""
    if urlsplit(uri).scheme.split("+")[0] not in ("postgresql", "mysql", "mssql"):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, pool_pre_ping=False)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


class Tracker:
    def __init__(self, uri: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        if self.uri.startswith(("http://", "https://")):
            # MLflow retries a silent server for minutes per request; ablate keeps the records
            # and retries them itself, so a request may fail fast
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        with _quick_http_failures():
            try:
                _connect_once(self.uri)
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
            except ModuleNotFoundError as err:
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} needs the Python package "
                                  f"'{err.name}' (for PostgreSQL: pip install 'ablate[dist]')") from None
            except Exception as err:
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} is unreachable ({first_line[:200]}); "
                                  "start it, or pass another --tracking-uri / MLFLOW_TRACKING_URI") from None

    def patiently(self, call, what: str):
        """call() now, or once the tracking store answers again (within PATIENCE_SECONDS)."""
        deadline = time.monotonic() + PATIENCE_SECONDS
        pause, warned = 1.0, False
        while True:
            try:
                return call()
            except Exception as err:  # the store is down, or timed out
                first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                if time.monotonic() + pause > deadline:
                    raise AblateError(f"the MLflow tracking store {redact(self.uri)} has not answered for "
                                      f"{PATIENCE_SECONDS:.0f} s ({what}: {first_line}); what the runs could not "
                                      "send is kept beside their checkpoints. Run the same command again when "
                                      "it is back") from None
                if not warned:
                    print(f"warning: the MLflow tracking store {redact(self.uri)} does not answer ({what}: "
                          f"{first_line}); waiting up to {PATIENCE_SECONDS:.0f} s for it", file=sys.stderr)
                    warned = True
                time.sleep(pause)
                pause = min(2 * pause, 15.0)

    def send_kept(self, folder: Path) -> int:
        """Send the records runs under `folder` kept while the store was away; how many runs'."""
        sent, left = send_kept(self.client, folder)
        if left:
            raise ConnectionError(f"the records kept in {', '.join(map(str, left))} were not taken")
        return sent

    # ---- experiments and parents -----------------------------------------------------------

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise AblateError(f"MLflow experiment '{name}' is deleted; restore it (mlflow experiments restore) "
                                  "or rename the study")
            return experiment.experiment_id
        if not create:
            return None
        return self.client.create_experiment(name)

    def start_study(self, experiment_id: str, study, runs: int, study_file: str) -> str:
        # the MLflow UI opens a training experiment on its runs and charts, not on GenAI traces
        self.client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
        for key, value in {"description": study.description, "baseline": study.baseline, "study_file": study_file,
                           "metric": study.report.metric, "goal": study.report.goal,
                           "arms": ",".join(a.name for a in study.arm_list())}.items():
            self.client.set_experiment_tag(experiment_id, f"ablate.{key}", value)
        run = self.client.create_run(experiment_id, run_name=f"{study.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                     tags={"ablate.kind": STUDY_KIND, "study": study.name, "git_commit": git_commit(),
                                           "planned_runs": str(runs), "mlflow.note.content": study.description})
        return run.info.run_id

    def end_study(self, parent_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(parent_id, status)

    def latest_parent(self, experiment_id: str) -> str | None:
        runs = self.client.search_runs([experiment_id], f"tags.`ablate.kind` = '{STUDY_KIND}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    # ---- arm runs ------------------------------------------------------------------------

    def runs_by_key(self, experiment_id: str, key: str | None = None) -> dict[str, object]:
        """The newest run of each run key in the experiment (or of the one `key`)."""
        query = f"tags.`ablate.kind` = '{RUN_KIND}'" + (f" and tags.run_key = '{key}'" if key else "")
        found = {}
        page = None
        while True:
            batch = self.client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"],
                                            max_results=1000, page_token=page)
            for run in batch:
                found[run.data.tags["run_key"]] = run
            page = batch.token
            if not page:
                return found

    def open_run(self, experiment_id: str, parent_id: str, spec: RunSpec, existing=None, kind: str = RUN_KIND,
                 name: str | None = None, tags: dict[str, str] | None = None,
                 outbox_path: Path | None = None) -> "TrackedRun":
        """Continue `existing` (an interrupted run of the same key) or create a new child run.
        What the store cannot take while the run trains is kept in `outbox_path`."""
        if existing is not None:
            history = self.client.get_metric_history(existing.info.run_id, "train_loss")
            logged_until = max((m.step for m in history), default=0)
            self.client.set_tag(existing.info.run_id, "state", "running")
            self.client.update_run(existing.info.run_id, status="RUNNING")
            return TrackedRun(self.client, existing.info.run_id, spec, logged_until, outbox_path)
        tags = {
            "mlflow.parentRunId": parent_id, "ablate.kind": kind, "study": spec.study, "arm": spec.arm,
            "seed": str(spec.seed), "run_key": spec.key(), "git_commit": git_commit(), "state": "running",
            **(tags or {}),
        }
        run = self.client.create_run(experiment_id, run_name=name or f"{spec.arm} seed={spec.seed}", tags=tags)
        return TrackedRun(self.client, run.info.run_id, spec, 0, outbox_path)


class TrackedRun:
    """A child run, observing its trainer: params at start, metrics batched, artifacts at the end.

    Everything goes through an :class:`~harness.outbox.Outbox`, so an unreachable tracking
    store never stops training and loses nothing: what it could not take is kept in
    `outbox_path` and sent later.
    """

    FLUSH_EVERY = 500

    def __init__(self, client, run_id: str, spec: RunSpec, logged_until: int, outbox_path: Path | None = None):
        self.client = client
        self.run_id = run_id
        self.spec = spec
        self.logged_until = logged_until
        self.outbox = Outbox(client, run_id, outbox_path, label=f"{spec.arm} seed={spec.seed}")
        self.pending: list[tuple[str, float, int, int]] = []

    def on_start(self, info: dict) -> None:
        params = dict(self.spec.flat_params())
        params.update({slot: str(getattr(self.spec.model, slot)) for slot in MODEL_SLOTS})
        params.update({key: str(value) for key, value in info.items()})
        self.outbox.params({k: v[:6000] for k, v in params.items()})
        self.outbox.tags({"device": info["device"]})
        self.outbox.flush()

    def on_metrics(self, step: int, metrics: dict) -> None:
        if step <= self.logged_until:  # logged before an interruption; the resumed run recomputed it
            return
        now = int(time.time() * 1000)
        self.pending += [(key, float(value), now, step) for key, value in metrics.items()]
        if "val_loss" in metrics or len(self.pending) >= self.FLUSH_EVERY:
            self.flush()

    def before_checkpoint(self, step: int, path) -> None:
        # every point up to this checkpoint must survive a crash once it is written: what
        # MLflow has not yet confirmed goes to disk first (sending it twice is harmless:
        # MLflow ignores a metric point it already holds); training does not wait for the store
        self.flush()
        self.outbox.keep()

    def flush(self, wait: bool = False) -> bool:
        """Hand the buffered metrics to the background sender; with `wait`, until it is done
        or the store has failed to take them (then they are kept on disk)."""
        if self.pending:
            self.outbox.metrics(self.pending)
            self.pending = []
        return self.outbox.flush(wait)

    def finish(self, result, summary: str, sample: str) -> None:
        tags = {"state": result.status}
        # what computed attention and the fused ops, and the fallbacks taken
        tags.update({k: str(v) for k, v in result.info.items() if k.startswith(("attention_backend", "kernel_"))})
        if result.reason:
            tags["failure_reason"] = result.reason
        self.flush()
        self.outbox.tags(tags)
        # steps_trained: by this execution, fewer than train.steps after a resume
        now = int(time.time() * 1000)
        self.outbox.metrics([(name, float(result.metrics.get(name, 0.0)), now, result.steps)
                             for name in ("wall_time_s", "steps_trained")])
        self.outbox.text("config.yaml", yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        self.outbox.text("model_summary.txt", summary)
        if sample:
            self.outbox.text("sample.txt", sample)
        self.outbox.terminate("FINISHED" if result.status == "finished" else "FAILED")
        self._close()

    def end(self, state: str, status: str, reason: str = "") -> None:
        """End a run that did not finish training: interrupted, pruned or failed."""
        self.flush()
        tags = {"state": state}
        if reason:
            tags["failure_reason"] = reason[:5000]
        self.outbox.tags(tags)
        self.outbox.terminate(status)
        self._close()

    def interrupted(self) -> None:
        self.end("interrupted", "KILLED")

    def _close(self) -> None:
        """Send everything now if the store answers; otherwise keep it on disk and say where."""
        if not self.outbox.flush(wait=True):
            where = self.outbox.path or "memory only"
            print(f"warning: run {self.outbox.label} ended while the tracking store was unreachable "
                  f"({self.outbox.last_error}); {len(self.outbox.records)} records are kept in {where} and "
                  "are sent by the next `ablate run` of this study", file=sys.stderr)
        self.outbox.close()
