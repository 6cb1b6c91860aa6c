"""The study ledger: every planned run of a study is an Optuna trial in shared storage.

Each plan of a study (its arms' configurations, whatever the seeds) has an Optuna study of
its own, `ablate:<study>:<plan id>`, whose trials have the arm and seed as params, the run key
as a user attribute, and the study's metric (named) as value: optuna-dashboard shows one
plan at a time, its arms side by side.

`ablate run` plans a study (one waiting trial per run key) and any number of workers
(`ablate run --jobs N` on this machine, `ablate worker` on others sharing the storage)
claim waiting trials one at a time. A claimed trial beats a heartbeat while its run trains;
when a worker dies, the next worker to look fails the stale trial and
`RetryHeartbeatStaleTrialCallback` puts a copy back in the queue, so the run is trained by someone
else (from the dead worker's checkpoint when the run folder is shared). Optuna's
PostgreSQL storage lets machines share one queue (`SELECT ... FOR UPDATE` hands each
waiting trial to one worker); the default sqlite file suits one machine.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import hashlib
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

from harness.config.run import RunSpec
from harness.config.run_state import RunState
from harness.environment import process_alive, seconds_from
from harness.errors import AblateError, file_fault
from harness.redaction import error_line, redact
from harness.sqlite_store import create_whole, sqlite_file, sqlite_file_fault
from harness.training import interrupt

DEFAULT_STORAGE = "sqlite:///optuna.db"
PLANNED_KEYS = "planned_keys"  # the ledger's user attribute listing the current plan's run keys


def heartbeat_seconds() -> int:
    """How often a worker's trial beats ($ABLATE_HEARTBEAT_INTERVAL; the tests shorten it)."""
    return int(seconds_from("ABLATE_HEARTBEAT_INTERVAL", 10))


def grace_seconds() -> int:
    """How long a silent trial stays its worker's before another may take it ($ABLATE_HEARTBEAT_GRACE)."""
    return int(seconds_from("ABLATE_HEARTBEAT_GRACE", 60))


def open_storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # a run's own failure is reported by ablate; Optuna would repeat it with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    database = sqlite_file(url)
    storage = RDBStorage
    if database is not None:
        storage = functools.partial(_claim_once_storage(), database)
    try:
        create_whole(url, lambda private: RDBStorage(private, engine_kwargs=engine))
        return storage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_seconds(), grace_period=grace_seconds(),
                       heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except ModuleNotFoundError as err:
        raise AblateError(f"the Optuna storage {redact(url)} needs the Python package '{err.name}' "
                          "(for PostgreSQL: pip install 'ablate[dist]')") from None
    except Exception as err:
        fault = file_fault(err) or sqlite_file_fault(err, url)
        if fault is not None:  # a local file: the folder or the file cannot be written
            raise fault from None
        raise AblateError(f"the Optuna storage {redact(url)} is unreachable ({error_line(err, 200)}); "
                          "check --storage") from None


def _claim_once_storage():
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    class ClaimOnce(RDBStorage):
        """An sqlite ledger whose workers claim a waiting trial one at a time.

        Optuna claims a waiting trial by reading its state and then setting it to RUNNING,
        relying on SELECT ... FOR UPDATE, which sqlite lacks: two workers could both read
        WAITING and both train the run, into the same MLflow run (seen with `--jobs 2`). An
        flock on the database file makes the read and the write one step (sqlite's own locks
        are POSIX record locks, which an flock does not touch); sqlite is on one machine, so a
        local lock covers every worker."""

        def __init__(self, database: Path, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.database = database

        def set_trial_state_values(self, trial_id, state, values=None):
            if state != TrialState.RUNNING:
                return super().set_trial_state_values(trial_id, state, values)
            with open(self.database, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
                return super().set_trial_state_values(trial_id, state, values)

    return ClaimOnce


def worker_name() -> str:
    """host:pid, recorded on the trials a process claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def release_dead_local_claims(study) -> int:
    """Fail the running trials of an Optuna study whose worker ran on this machine and is gone
    (killed with SIGKILL, say), so that their runs go back in the queue now instead of after
    the heartbeat grace period. Returns how many were released."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    released = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
        if worker_host == host and pid.isdigit() and not process_alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            released += 1
    return released


def release_abandoned_claims(study) -> int:
    """Fail, and queue again, the running trials that no worker ever took up: claimed (Optuna set
    them RUNNING) by a worker killed before it named itself and before its first heartbeat, so
    that neither its pid (release_dead_local_claims) nor a stale heartbeat (Optuna's
    fail_stale_trials) can show it is gone. A worker names itself a moment after it claims, so
    a trial still unnamed after the heartbeat grace period has none. Returns how many."""
    from optuna.trial import TrialState

    released = 0
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_seconds())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in trial.user_attrs or trial.datetime_start is None or trial.datetime_start > cutoff:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another worker released it first
            continue
        attrs = {key: trial.user_attrs[key] for key in ("run_key", "arm", "seed") if key in trial.user_attrs}
        if "run_key" in attrs:
            study.enqueue_trial({"arm": attrs["arm"], "seed": attrs["seed"]}, user_attrs=attrs)
        released += 1
    return released


def plan_id(runs: list[RunSpec], tune: str = "") -> str:
    """What names a plan's ledger: its arms' names and run keys without their seeds (a
    sequential study adds seeds to the same plan; a renamed arm is another plan, whose trials'
    `arm` param has other choices), and the tuning settings of a tuned one (whose runs' keys
    depend on what tuning finds)."""
    arms = sorted({(spec.arm, spec.model_copy(update={"seed": 0}).key()) for spec in runs})
    return hashlib.sha256(json.dumps([arms, tune]).encode()).hexdigest()[:12]


def ledger_names(storage, study_name: str) -> list[str]:
    """The ledger studies of every plan of `study_name` in `storage`, oldest first."""
    import optuna

    prefix = f"ablate:{study_name}:"
    return [name for name in optuna.get_all_study_names(storage)
            if name.startswith(prefix) and ":" not in name[len(prefix):]]


class Planned(NamedTuple):
    queued: int  # runs of the plan waiting in the queue now (queued by this plan or an interrupted one)
    missing: int  # runs queued again because the ledger had them settled and MLflow does not hold them


class Ledger:
    def __init__(self, storage_url: str, study_name: str, plan: str | None = None):
        """The ledger of one plan of the study (default: the plan run last in `storage_url`)."""
        self.url = storage_url
        self.storage = open_storage(storage_url)
        if plan is None:
            known = ledger_names(self.storage, study_name)
            self.name = known[-1] if known else f"ablate:{study_name}:none"
        else:
            self.name = f"ablate:{study_name}:{plan}"

    def open(self, parent_run_id: str, metric: str) -> None:
        """Start an execution of the study: workers attach their MLflow runs to `parent_run_id`
        and wait (tuning first, if the study tunes) until :meth:`plan` has queued the runs."""
        import optuna

        study = optuna.create_study(study_name=self.name, storage=self.storage, load_if_exists=True)
        study.set_metric_names([metric])
        study.set_user_attr("mlflow_parent_run_id", parent_run_id)
        study.set_user_attr("planned", False)

    def plan(self, specs: list[RunSpec], tracked: set[str]) -> Planned:
        """Queue every run of `specs` that has no waiting or running trial and that MLflow does
        not hold settled (`tracked`: the keys it holds settled). The ledger only queues: a run
        whose trial completed but which MLflow does not hold (a store deleted or reset, a run
        deleted, another tracking URI over this ledger) is queued again. A trial carries its
        run's arm and seed as params, and its key, arm and seed as user attributes. The plan's
        keys are kept on the ledger: waiting trials of an earlier plan that this one dropped
        (fewer seeds, say) are skipped by the workers instead of trained."""
        study = self._load()
        trials = study.get_trials(deepcopy=False)
        waiting = {t.user_attrs.get("run_key") for t in trials if t.state.name == "WAITING"}
        in_flight = waiting | {t.user_attrs.get("run_key") for t in trials if t.state.name == "RUNNING"}
        settled = {t.user_attrs.get("run_key") for t in trials if t.state.name in ("COMPLETE", "PRUNED")}
        queue = [spec for spec in specs if spec.key() not in in_flight and spec.key() not in tracked]
        arms = list(dict.fromkeys([*study.user_attrs.get("arms", []), *(spec.arm for spec in specs)]))
        study.set_user_attr("arms", arms)
        study.set_user_attr(PLANNED_KEYS, sorted({spec.key() for spec in specs}))
        for spec in queue:
            study.enqueue_trial({"arm": spec.arm, "seed": spec.seed},
                                user_attrs={"run_key": spec.key(), "arm": spec.arm, "seed": spec.seed})
        study.set_user_attr("planned", True)
        queued = len(queue) + sum(spec.key() in waiting for spec in specs)  # an earlier execution's queue too
        return Planned(queued, sum(spec.key() in settled for spec in queue))

    def release_dead_local_claims(self) -> int:
        """See :func:`release_dead_local_claims`."""
        return release_dead_local_claims(self._load())

    def wait_until_planned(self, poll_seconds: float = 2.0) -> None:
        study = self._load()
        while not study.user_attrs.get("planned"):
            time.sleep(poll_seconds)
            study = self._load()

    def _load(self):
        import optuna

        try:
            return optuna.load_study(study_name=self.name, storage=self.storage)
        except KeyError:
            raise AblateError(f"no plan of this study's configuration ('{self.name}') in {redact(self.url)}; plan "
                              "it first with `ablate run STUDY.yaml --storage URL --jobs 0`, with the same "
                              "--set, --profile and plugins as this worker") from None

    def planned_keys(self) -> list[str] | None:
        """The run keys of the plan queued last, or None before one is."""
        try:
            return self._load().user_attrs.get(PLANNED_KEYS)
        except AblateError:
            return None

    def parent_run_id(self) -> str:
        return self._load().user_attrs["mlflow_parent_run_id"]

    def trials(self) -> list:
        """Every trial of the ledger (frozen), oldest first; [] before the study is planned."""
        import optuna

        try:
            return optuna.load_study(study_name=self.name, storage=self.storage).get_trials(deepcopy=False)
        except KeyError:
            return []

    def has_open_runs(self) -> tuple[bool, bool]:
        """(whether any run is waiting or running anywhere, whether one is waiting), after
        failing the trials of workers whose heartbeat went stale."""
        import optuna
        from optuna.trial import TrialState

        study = self._load()
        optuna.storages.fail_stale_trials(study)
        release_abandoned_claims(study)
        states = {t.state for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))}
        return bool(states), TrialState.WAITING in states

    def run_next(self, train: Callable[[object, str], tuple[RunState, float | None]]) -> None:
        """Claim one waiting run and train it, its trial beating a heartbeat meanwhile.

        `train(trial, run_key)` returns the run's final state and metric; the trial ends in
        that state's trial state, with the metric as its value.
        """
        import optuna
        from optuna.trial import TrialState

        def objective(trial):
            key = trial.user_attrs.get("run_key")
            if key is None:  # another worker claimed the last waiting trial first
                trial.set_user_attr("empty", True)
                raise optuna.TrialPruned("no planned run was left to claim")
            if key not in trial.study.user_attrs.get(PLANNED_KEYS, [key]):  # queued by a plan since replaced
                trial.set_user_attr("superseded", True)
                raise optuna.TrialPruned(f"run {key} is not in the study's current plan")
            trial.set_user_attr("worker", worker_name())
            claimed.update(trial.user_attrs)
            hold.release()  # Optuna's heartbeat thread runs and will be joined: a stop may raise (queued again)
            # the enqueued values, as params the dashboard can plot against (one distribution
            # per name across the study: every arm of the plan, any seed)
            trial.suggest_categorical("arm", trial.study.user_attrs["arms"])
            seed = trial.user_attrs["seed"]
            trial.suggest_int("seed", seed, seed)
            state, value = train(trial, key)
            trial.set_user_attr("state", state.value)
            if state.trial_state == TrialState.FAIL:  # not settled: the next `ablate run` plans it again
                raise RunNotSettled(f"run {key} ended {state.value}")
            if state.trial_state == TrialState.PRUNED or value is None:
                raise optuna.TrialPruned(f"run {key} ended {state.value}")
            return value

        claimed: dict = {}
        study = self._load()
        try:
            # a stop while Optuna starts the trial's heartbeat thread would leave that thread running
            # and the process unable to exit: held until the objective starts
            with interrupt.held() as hold:
                study.optimize(objective, n_trials=1, catch=(RunNotSettled,))
        except BaseException:
            # stopped (Ctrl-C, SIGTERM, SLURM's warning before a time limit) or unable to go on: Optuna
            # failed the trial; a copy goes back in the queue, for another worker or the next `ablate run`
            if "run_key" in claimed:
                study.enqueue_trial({"arm": claimed["arm"], "seed": claimed["seed"]},
                                    user_attrs={k: claimed[k] for k in ("run_key", "arm", "seed")})
            raise


class RunNotSettled(Exception):
    """A run ended failed: its trial fails, so that the next plan queues the run again."""
