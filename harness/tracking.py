"""MLflow tracking: experiment = study, one parent run per execution of the study, one child
run per arm x seed.

Runs are found again by their run key (a tag), which is how a re-run skips finished runs and
continues interrupted ones in the same MLflow run. Metrics are buffered and handed to
MLflow's asynchronous `log_batch` at evaluations, so the training loop never waits on the
tracking store; at checkpoints and at the end the logger is waited for, so a crash loses
only metrics that its checkpoint will recompute.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import yaml

from harness.errors import AblateError
from harness.registry import MODEL_SLOTS
from harness.spec import RunSpec

RUN_KIND = "arm_run"
TUNE_KIND = "tune_trial"
STUDY_KIND = "study"
DONE_STATES = ("finished", "diverged")  # a re-run does not train these again
REPORTED_STATES = (*DONE_STATES, "failed")  # failed: out of memory or an unusable checkpoint; retried


def redact(uri: str) -> str:
    """The URI with any password replaced, fit for messages, tags and reports."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


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


class Tracker:
    def __init__(self, uri: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        with _quick_http_failures():
            try:
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
            except ModuleNotFoundError as err:
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} needs the Python package "
                                  f"'{err.name}' (for PostgreSQL: pip install 'ablate[dist]')") from None
            except Exception as err:
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} is unreachable ({first_line[:200]}); "
                                  "start it, or pass another --tracking-uri / MLFLOW_TRACKING_URI") from None

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
                 name: str | None = None, tags: dict[str, str] | None = None) -> "TrackedRun":
        """Continue `existing` (an interrupted run of the same key) or create a new child run."""
        if existing is not None:
            history = self.client.get_metric_history(existing.info.run_id, "train_loss")
            logged_until = max((m.step for m in history), default=0)
            self.client.set_tag(existing.info.run_id, "state", "running")
            self.client.update_run(existing.info.run_id, status="RUNNING")
            return TrackedRun(self.client, existing.info.run_id, spec, logged_until)
        tags = {
            "mlflow.parentRunId": parent_id, "ablate.kind": kind, "study": spec.study, "arm": spec.arm,
            "seed": str(spec.seed), "run_key": spec.key(), "git_commit": git_commit(), "state": "running",
            **(tags or {}),
        }
        run = self.client.create_run(experiment_id, run_name=name or f"{spec.arm} seed={spec.seed}", tags=tags)
        return TrackedRun(self.client, run.info.run_id, spec, 0)


class TrackedRun:
    """A child run, observing its trainer: params at start, metrics batched, artifacts at the end."""

    FLUSH_EVERY = 500

    def __init__(self, client, run_id: str, spec: RunSpec, logged_until: int):
        self.client = client
        self.run_id = run_id
        self.spec = spec
        self.logged_until = logged_until
        self.pending = []
        self.in_flight = []  # asynchronous log_batch operations not yet confirmed

    def on_start(self, info: dict) -> None:
        from mlflow.entities import Param

        params = dict(self.spec.flat_params())
        params.update({slot: str(getattr(self.spec.model, slot)) for slot in MODEL_SLOTS})
        params.update({key: str(value) for key, value in info.items()})
        params = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        self.client.set_tag(self.run_id, "device", info["device"])

    def on_metrics(self, step: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_until:  # logged before an interruption; the resumed run recomputed it
            return
        now = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if "val_loss" in metrics or len(self.pending) >= self.FLUSH_EVERY:
            self.flush()

    def on_checkpoint(self, step: int, path) -> None:
        # what the checkpoint can resume from must be stored, not merely queued
        self.flush(wait=True)

    def flush(self, wait: bool = False) -> None:
        """Hand the buffered metrics to MLflow's background logger; `wait` for all of them."""
        for start in range(0, len(self.pending), 1000):
            self.in_flight.append(
                self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000], synchronous=False))
        self.pending = []
        if wait:
            for operation in self.in_flight:
                operation.wait()
            self.in_flight = []

    def finish(self, result, summary: str, sample: str) -> None:
        from mlflow.entities import RunTag

        self.flush(wait=True)
        tags = {"state": result.status}
        # what computed attention and the fused ops, and the fallbacks taken
        tags.update({k: str(v) for k, v in result.info.items() if k.startswith(("attention_backend", "kernel_"))})
        if result.reason:
            tags["failure_reason"] = result.reason
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        for name in ("wall_time_s", "steps_trained"):  # steps_trained: by this execution, after a resume
            self.client.log_metric(self.run_id, name, result.metrics.get(name, 0.0))
        self.client.log_text(self.run_id, yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False), "config.yaml")
        self.client.log_text(self.run_id, summary, "model_summary.txt")
        if sample:
            self.client.log_text(self.run_id, sample, "sample.txt")
        self.client.set_terminated(self.run_id, "FINISHED" if result.status == "finished" else "FAILED")

    def end(self, state: str, status: str, reason: str = "") -> None:
        """End a run that did not finish training: interrupted, pruned or failed."""
        self.flush(wait=True)
        self.client.set_tag(self.run_id, "state", state)
        if reason:
            self.client.set_tag(self.run_id, "failure_reason", reason[:5000])
        self.client.set_terminated(self.run_id, status)

    def interrupted(self) -> None:
        self.end("interrupted", "KILLED")
