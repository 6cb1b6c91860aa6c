"""The study ledger: every planned run of a study is an Optuna trial in shared storage.

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

import os
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Callable

from harness.errors import AblateError
from harness.redaction import redact

DEFAULT_STORAGE = "sqlite:///optuna.db"
HEARTBEAT_SECONDS = int(os.environ.get("ABLATE_HEARTBEAT_INTERVAL", "10"))
GRACE_SECONDS = int(os.environ.get("ABLATE_HEARTBEAT_GRACE", "60"))
# a run's trial is done in these states; a failed one is planned again by the next `ablate run`
SETTLED = ("WAITING", "RUNNING", "COMPLETE", "PRUNED")


def open_storage(url: str):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # a run's own failure is reported by ablate; Optuna would repeat it with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except ModuleNotFoundError as err:
        raise AblateError(f"the Optuna storage {redact(url)} needs the Python package '{err.name}' "
                          "(for PostgreSQL: pip install 'ablate[dist]')") from None
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise AblateError(f"the Optuna storage {redact(url)} is unreachable ({first_line[:200]}); "
                          "check --storage") from None


class RunFailedInLedger(Exception):
    """A run ended failed (out of memory, an unusable checkpoint): its trial fails."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class WorkerOutcome:
    trained: int = 0
    done_already: int = 0


class Ledger:
    def __init__(self, storage_url: str, study_name: str):
        self.url = storage_url
        self.storage = open_storage(storage_url)
        self.name = f"ablate:{study_name}"

    def open(self, parent_run_id: str) -> None:
        """Start an execution of the study: workers attach their MLflow runs to `parent_run_id`
        and wait (tuning first, if the study tunes) until :meth:`plan` has queued the runs."""
        import optuna

        study = optuna.create_study(study_name=self.name, storage=self.storage, load_if_exists=True)
        study.set_user_attr("mlflow_parent_run_id", parent_run_id)
        study.set_user_attr("planned", False)

    def plan(self, run_keys: list[str]) -> int:
        """Queue every run key that has no waiting, running or finished trial; returns how many."""
        study = self._load()
        settled = {t.user_attrs.get("run_key") for t in study.get_trials(deepcopy=False) if t.state.name in SETTLED}
        missing = [key for key in run_keys if key not in settled]
        for key in missing:
            study.enqueue_trial({"run_key": key}, user_attrs={"run_key": key})
        study.set_user_attr("planned", True)
        return len(missing)

    def release_dead_local_claims(self) -> int:
        """Fail the running trials of workers on this machine whose process is gone (killed
        with SIGKILL, say), so that the plan queues their runs now instead of after the
        heartbeat grace period. Returns how many were released."""
        from optuna.trial import TrialState

        study = self._load()
        host = socket.gethostname()
        released = 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
            if worker_host == host and pid.isdigit() and not _alive(int(pid)):
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                released += 1
        return released

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
            raise AblateError(f"no planned study '{self.name}' in {redact(self.url)}; plan it first with "
                              "`ablate run STUDY.yaml --storage URL --jobs 0`") from None

    def parent_run_id(self) -> str:
        return self._load().user_attrs["mlflow_parent_run_id"]

    def work(self, train_key: Callable[[str], tuple[str, float | None]], poll_seconds: float = 2.0) -> WorkerOutcome:
        """Claim and train waiting runs until none is waiting or running anywhere.

        `train_key(run_key)` returns the run's state and final metric; 'done' means MLflow
        had it finished already.
        """
        import optuna
        from optuna.trial import TrialState

        study = self._load()
        outcome = WorkerOutcome()
        worker = f"{socket.gethostname()}:{os.getpid()}"

        def objective(trial):
            key = trial.user_attrs.get("run_key")
            if key is None:  # another worker claimed the last waiting trial first
                trial.set_user_attr("empty", True)
                raise optuna.TrialPruned("no planned run was left to claim")
            trial.set_user_attr("worker", worker)
            state, value = train_key(key)
            trial.set_user_attr("state", state)
            if state == "done":
                outcome.done_already += 1
            else:
                outcome.trained += 1
            if state == "failed":  # FAIL: not settled, so the next `ablate run` plans it again
                raise RunFailedInLedger(key)
            if state == "diverged" or value is None:
                raise optuna.TrialPruned(f"run ended {state}")
            return value

        while True:
            optuna.storages.fail_stale_trials(study)
            open_trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
            if not open_trials:
                return outcome
            if not any(t.state == TrialState.WAITING for t in open_trials):
                time.sleep(poll_seconds)  # a run in flight elsewhere may still fail and come back
                continue
            study.optimize(objective, n_trials=1, catch=(RunFailedInLedger,))
