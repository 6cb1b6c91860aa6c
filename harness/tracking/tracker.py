"""The MLflow tracking store: experiment = study, one parent run per execution of the study,
one child run per arm x seed (and per tuning trial).

Runs are found again by their identity tags (the run key), which is how a re-run skips
settled runs and continues interrupted ones in the same MLflow run. Every request that can
meet an outage goes through :meth:`Tracker.patiently`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sqlite3
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from harness.config.records import PlanRecord
from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.environment import environment, process_alive, seconds_from
from harness.errors import AblateError, file_fault
from harness.notices import say, warn
from harness.redaction import error_line, redact
from harness.sqlite_store import create_whole, sqlite_file, sqlite_file_fault, wait_while_created_elsewhere
from harness.tracking.lineage import plugin_tags, version_tags
from harness.tracking.outage import is_outage
from harness.tracking.outbox import send_kept
from harness.tracking.tracked_run import TrackedRun

RUN_KIND = "arm_run"
TUNE_KIND = "tune_trial"
ARM_KIND = "arm"  # an arm's across-seed aggregate (see harness.report.arm_runs)
STUDY_KIND = "study"
PLAN_FILE = "plan.json"


@dataclass
class DerivedRun:
    """A run made from other runs' records (an arm's across-seed mean): its name, its tags, and
    its metric points as (key, value, step)."""

    name: str
    tags: dict[str, str]
    points: list[tuple[str, float, int]]


def _quick_http_failures():
    # MLflow retries an unreachable server for minutes by default; a start-up check should not
    return environment({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})


def patience_seconds() -> float:
    """How long a study waits for a tracking store that stopped answering before it gives up."""
    return seconds_from("ABLATE_TRACKING_PATIENCE", 600)


# an execution's parent run beats every HEARTBEAT_SECONDS; one silent for ABANDONED_AFTER_SECONDS is dead
HEARTBEAT_SECONDS = 60.0
ABANDONED_AFTER_SECONDS = 600.0


class _Heartbeat:
    """A background thread that sets the parent run's `ablate.heartbeat` tag (epoch seconds)
    while the execution lives; a store that does not answer meanwhile is tried at the next beat."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="ablate-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "ablate.heartbeat", f"{time.time():.0f}")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


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


def _open_store(uri: str):
    """An MlflowClient of `uri` once its schema is whole.

    Another program (`mlflow ui`, a script) may be creating the same new local store: opening it
    midway would run MLflow's migrations beside that program's and break one of the two ("table
    ... already exists", "duplicate column name", "Online migration expected to match one row").
    So a store file being written now whose schema is not at MLflow's head is waited for first,
    and a failure to open a local store is tried again until the patience runs out."""
    from mlflow.tracking import MlflowClient

    path = sqlite_file(uri)
    patience = min(30.0, patience_seconds())
    if path is not None:
        wait_while_created_elsewhere(path, _mlflow_schema_current, patience)
    deadline = time.monotonic() + patience
    while True:
        try:
            with warnings.catch_warnings():  # alembic's notes on reflected constraints are not ablate's to print
                warnings.simplefilter("ignore", UserWarning)
                client = MlflowClient(tracking_uri=uri)
                client.search_experiments(max_results=1)
            return client
        except Exception as err:
            if path is None or sqlite_file_fault(err, uri) is not None:
                raise
            if time.monotonic() > deadline:
                raise AblateError(f"the MLflow tracking store {redact(uri)} is half-created or of another MLflow "
                                  f"version ({error_line(err, 120)}): if no other program is creating it, move the "
                                  "file away (or `mlflow db upgrade` it) and run again") from None
            time.sleep(1.0)


def _mlflow_schema_current(path: Path) -> bool:
    """Whether the store at `path` records MLflow's newest schema revision (alembic_version)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == _mlflow_schema_head()


@functools.cache
def _mlflow_schema_head() -> str:
    """The newest revision of MLflow's schema, from its migration scripts (alembic's own reader)."""
    from alembic.script import ScriptDirectory
    from mlflow.store import db_migrations

    return ScriptDirectory(str(Path(db_migrations.__file__).parent)).get_current_head()


def clipped(text: str, limit: int = 5000) -> str:
    """`text` within the length MLflow takes for a tag (the whole of it stays in the study file)."""
    return text if len(text) <= limit else text[:limit - 40] + " … (cut; the study file has the rest)"


def tracking_uri(uri: str | None = None) -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else MLflow's default (sqlite:///mlflow.db here)."""
    import mlflow

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def tracking_store_exists(uri: str | None = None) -> bool:
    """False for a local sqlite store whose file is not there yet (opening it would create it)."""
    uri = tracking_uri(uri)
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


class Tracker:
    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(uri)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for ablate's own lines
        # MLflow's SQL store logs every database error with its traceback before raising it; ablate
        # says what a failed request means in one line (see patiently)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        if self.uri.startswith(("http://", "https://")):
            # MLflow retries a silent server for minutes per request; ablate keeps the records
            # and retries them itself, so a request may fail fast
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        with _quick_http_failures():
            try:
                _connect_once(self.uri)
                create_whole(self.uri, lambda url: MlflowClient(tracking_uri=url).search_experiments(max_results=1))
                self.client = _open_store(self.uri)
            except AblateError:
                raise
            except ModuleNotFoundError as err:
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} needs the Python package "
                                  f"'{err.name}' (for PostgreSQL: pip install 'ablate[dist]')") from None
            except Exception as err:
                fault = file_fault(err) or sqlite_file_fault(err, self.uri)
                if fault is not None:  # a local file: waiting or starting a server would not help
                    raise fault from None
                raise AblateError(f"the MLflow tracking store {redact(self.uri)} is unreachable ({error_line(err, 200)}); "
                                  "start it, or pass another --tracking-uri / MLFLOW_TRACKING_URI") from None

    def patiently(self, call, what: str):
        """call() now, or once the tracking store answers again (within patience_seconds()).

        Only a store that does not answer is waited for. A local file fault stops at once,
        naming the path; a refusal by the store is the user's to fix; anything else is a bug."""
        deadline = time.monotonic() + patience_seconds()
        pause, warned = 1.0, False
        while True:
            try:
                return call()
            except AblateError:  # the user's to fix: waiting would not help
                raise
            except Exception as err:
                fault = file_fault(err) or sqlite_file_fault(err, self.uri)
                if fault is not None:
                    raise fault from None
                if not is_outage(err):
                    from mlflow.exceptions import MlflowException

                    if isinstance(err, MlflowException):
                        raise AblateError(f"the MLflow tracking store {redact(self.uri)} refused {what} "
                                          f"({error_line(err, 300)})") from None
                    raise
                first_line = error_line(err, 200)
                if time.monotonic() + pause > deadline:
                    raise AblateError(f"the MLflow tracking store {redact(self.uri)} has not answered for "
                                      f"{patience_seconds():.0f} s ({what}: {first_line}); what the runs could not "
                                      "send is kept beside their checkpoints. Run the same command again when "
                                      "it is back") from None
                if not warned:
                    warn(f"the MLflow tracking store {redact(self.uri)} does not answer ({what}: "
                          f"{first_line}); waiting up to {patience_seconds():.0f} s for it")
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
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # another first run of the study created it a moment ago
            return self.client.get_experiment_by_name(name).experiment_id

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """Set a tag of the study's experiment. Workers that finish together may set the same
        tag at once: MLflow's SQL store looks the tag up, then inserts it, so the second insert
        breaks a UNIQUE constraint. The tag exists by then, and setting it again updates it."""
        import sqlalchemy.exc
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_experiment_tag(experiment_id, key, value)
        except MlflowException as err:
            if not isinstance(err.__cause__ or err.__context__, sqlalchemy.exc.IntegrityError):
                raise
            self.client.set_experiment_tag(experiment_id, key, value)

    @contextlib.contextmanager
    def execution(self, study, runs: int, study_file: str) -> Iterator[str]:
        """One execution of a study as the parent run that brackets it; yields its run id.

        Executions that died without ending theirs (SIGKILL, a lost machine) are ended KILLED
        first. The parent beats a heartbeat while the execution lives, ends KILLED when anything
        escapes the block (a stop request, a fault) and FINISHED when the block is done."""
        experiment_id = self.experiment_id(study.name)
        ended = self.patiently(lambda: self.end_abandoned(experiment_id), "ending abandoned executions")
        if ended:
            say(f"{ended} earlier executions of study '{study.name}' died without ending their parent run in MLflow "
                "(their processes are gone); they are marked KILLED")
        parent = self.patiently(lambda: self.start_study(experiment_id, study, runs, study_file), "starting the study")
        heartbeat = _Heartbeat(self.client, parent)
        try:
            yield parent
        except BaseException:
            heartbeat.stop()
            with contextlib.suppress(Exception):  # the store may be what failed
                self.end_study(parent, "KILLED")
            raise
        heartbeat.stop()
        self.patiently(lambda: self.end_study(parent), "ending the study")

    def end_abandoned(self, experiment_id: str) -> int:
        """End as KILLED the study's parent runs left RUNNING by executions that are gone: on
        this machine, whose process no longer exists; anywhere, whose heartbeat stopped more
        than ABANDONED_AFTER_SECONDS ago. Returns how many."""
        here, now, ended = socket.gethostname(), time.time(), 0
        for run in self.find_runs(experiment_id, STUDY_KIND):
            tags = run.data.tags
            if run.info.status != "RUNNING" or "ablate.heartbeat" not in tags:
                continue
            pid = tags.get("ablate.execution_pid", "")
            gone_here = tags.get("ablate.execution_host") == here and pid.isdigit() and not process_alive(int(pid))
            silent = now - float(tags["ablate.heartbeat"]) > ABANDONED_AFTER_SECONDS
            if gone_here or silent:
                self.client.set_tag(run.info.run_id, "ablate.ended_by", f"a later execution on {here}: the process "
                                    f"{tags.get('ablate.execution_host')}:{pid} was gone")
                self.client.set_terminated(run.info.run_id, "KILLED")
                ended += 1
        return ended

    def start_study(self, experiment_id: str, study, runs: int, study_file: str) -> str:
        # the MLflow UI opens a training experiment on its runs and charts, not on GenAI traces
        self.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
        for key, value in {"description": study.description, "baseline": study.baseline, "study_file": study_file,
                           "metric": study.report.metric, "goal": study.report.goal,
                           "arms": ",".join(a.name for a in study.arm_list())}.items():
            self.set_experiment_tag(experiment_id, f"ablate.{key}", clipped(str(value)))
        run = self.client.create_run(experiment_id, run_name=f"{study.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                     tags={"ablate.kind": STUDY_KIND, "study": study.name, **version_tags(),
                                           "planned_runs": str(runs), "mlflow.note.content": clipped(study.description),
                                           "ablate.execution_host": socket.gethostname(),
                                           "ablate.execution_pid": str(os.getpid()),
                                           "ablate.heartbeat": f"{time.time():.0f}"})
        return run.info.run_id

    def end_study(self, parent_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(parent_id, status)

    def record_plan(self, parent_id: str, plan: PlanRecord) -> str:
        """Record on an execution's parent run what it set out to train (see harness.study.plan):
        its report covers exactly these runs. The newest plan already recorded, when it is the
        same, stays the one reports cover (a re-run with nothing new keeps the study's plan id).
        Returns the parent run id whose plan the report covers."""
        experiment_id = self.client.get_run(parent_id).info.experiment_id
        with contextlib.suppress(AblateError):  # no plan recorded yet
            newest, recorded = self.plan(experiment_id)
            if recorded == plan:
                return newest
        self.client.log_text(parent_id, plan.model_dump_json(indent=1), PLAN_FILE)
        self.client.set_tag(parent_id, "ablate.plan", PLAN_FILE)
        return parent_id

    def plan(self, experiment_id: str, parent_id: str | None = None) -> tuple[str, PlanRecord]:
        """(parent run id, plan) of the newest execution that recorded a plan, or of `parent_id`."""
        parents = self.find_runs(experiment_id, STUDY_KIND)
        if parent_id is not None:
            parents = [run for run in parents if run.info.run_id == parent_id]
            if not parents:
                raise AblateError(f"no execution {parent_id} in this study; its parent runs are listed in the "
                                  "MLflow UI (the runs named after the study and a date)")
        with_plan = [run for run in parents if "ablate.plan" in run.data.tags]
        if not with_plan:
            raise AblateError("no execution of this study recorded its plan (an older ablate ran it, or it was "
                              "stopped before planning); run the study again with `ablate run`")
        parent = with_plan[-1].info.run_id
        with tempfile.TemporaryDirectory() as folder:
            recorded = Path(self.client.download_artifacts(parent, PLAN_FILE, folder)).read_text()
        return parent, PlanRecord.model_validate_json(recorded)

    # ---- runs ----------------------------------------------------------------------------

    def runs_by_key(self, experiment_id: str) -> dict[str, object]:
        """The newest comparison run of each run key in the experiment."""
        return {run.data.tags["run_key"]: run for run in self.find_runs(experiment_id, RUN_KIND)}

    def find_run(self, experiment_id: str, kind: str, identity: dict[str, str]):
        """The newest run of this kind whose tags hold `identity`, or None."""
        runs = self.find_runs(experiment_id, kind, identity)
        return runs[-1] if runs else None

    def find_runs(self, experiment_id: str, kind: str, identity: dict[str, str] | None = None) -> list:
        """Every run of this kind (whose tags hold `identity`: values of letters and digits), oldest first."""
        query = " and ".join([f"tags.`ablate.kind` = '{kind}'",
                              *(f"tags.`{k}` = '{v}'" for k, v in (identity or {}).items())])
        found, page = [], None
        while True:
            batch = self.client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"],
                                            max_results=1000, page_token=page)
            found += batch
            page = batch.token
            if not page:
                return found

    def open_run(self, experiment_id: str, parent_id: str, spec: RunSpec, *, kind: str, name: str,
                 tags: dict[str, str], existing=None, outbox_path: Path | None = None) -> TrackedRun:
        """Continue `existing` (an earlier attempt at the same run) or create a new child run.
        What the store cannot take while the run trains is kept in `outbox_path`."""
        if existing is not None:
            # metric by metric: an evaluation may have been logged past the last training-loss point
            logged_until = {key: max((m.step for m in self.client.get_metric_history(existing.info.run_id, key)),
                                     default=0) for key in existing.data.metrics}
            self.client.set_tag(existing.info.run_id, "state", RunState.RUNNING.value)
            self.client.update_run(existing.info.run_id, status=RunState.RUNNING.mlflow_status)
            attempt = int(existing.data.tags.get("attempt", "1")) + 1
            return TrackedRun(self.client, existing.info.run_id, spec, logged_until, outbox_path, attempt=attempt,
                              logged_params=dict(existing.data.params))
        tags = {
            "mlflow.parentRunId": parent_id, "ablate.kind": kind, "study": spec.study, "arm": spec.arm,
            "seed": str(spec.seed), "run_key": spec.key(), **version_tags(), **plugin_tags(spec),
            "state": RunState.RUNNING.value, **tags,
        }
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        return TrackedRun(self.client, run.info.run_id, spec, {}, outbox_path)

    # ---- what reports read back and write beside the runs ---------------------------------

    def study_names(self) -> list[str]:
        """The experiments of the store that hold an ablate study (an execution's parent run)."""
        return [experiment.name for experiment in self.client.search_experiments()
                if self.find_runs(experiment.experiment_id, STUDY_KIND)]

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every point of one metric of a run."""
        return [(point.step, point.value) for point in self.client.get_metric_history(run_id, key)]

    def attach_files(self, run_id: str, paths: list[Path], folder: str) -> None:
        """Copy files to the run's artifacts under `folder`."""
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path=folder)

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str] | None = None) -> str:
        """A plain run (a benchmark's parent, say); returns its id."""
        return self.client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id

    def replace_derived_runs(self, experiment_id: str, parent_run_id: str, kind: str,
                             runs: list[DerivedRun]) -> list[str]:
        """Replace the parent's child runs of `kind` (records derived from other runs, made
        again whenever they are derived again) with `runs`, finished; returns their ids."""
        for old in self.find_runs(experiment_id, kind, {"mlflow.parentRunId": parent_run_id}):
            self.client.delete_run(old.info.run_id)
        from mlflow.entities import Metric

        made = []
        for derived in runs:
            tags = {"mlflow.parentRunId": parent_run_id, "ablate.kind": kind, **version_tags(), **derived.tags}
            run_id = self.client.create_run(experiment_id, run_name=derived.name, tags=tags).info.run_id
            now = int(time.time() * 1000)
            metrics = [Metric(key, value, now, step) for key, value, step in derived.points]
            for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
                self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
            self.client.set_terminated(run_id, "FINISHED")
            made.append(run_id)
        return made
