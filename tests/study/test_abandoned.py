"""A worker killed between claiming a run (Optuna set its trial RUNNING) and naming itself on it,
before its first heartbeat, left a trial that nothing could show was dead: every later worker
waited for it forever. After the heartbeat grace period it is failed and its run queued again."""

import optuna

from harness.config.run import RunSpec
from harness.study.ledger import Ledger
from tests.conftest import ledger_study


def test_a_claim_no_worker_took_up_goes_back_in_the_queue_after_the_grace_period(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/optuna.db"
    ledger = Ledger(url, "abandoned", "plan")
    ledger.open("parent", "val_loss")
    specs = [RunSpec(study="abandoned", seed=seed) for seed in range(2)]
    assert ledger.plan(specs, tracked=set()).queued == 2
    study = ledger_study(url, "abandoned")
    claimed = study.ask()  # what a worker does first; killed here, it never names itself or beats
    assert claimed.user_attrs["run_key"] == specs[0].key()

    monkeypatch.setenv("ABLATE_HEARTBEAT_GRACE", "3600")
    assert ledger.has_open_runs() == (True, True)
    assert study.get_trials()[claimed.number].state.name == "RUNNING", "within the grace period it is a worker's"

    monkeypatch.setenv("ABLATE_HEARTBEAT_GRACE", "0")
    assert ledger.has_open_runs() == (True, True)
    trials = study.get_trials()
    assert trials[claimed.number].state == optuna.trial.TrialState.FAIL
    waiting = sorted(t.user_attrs["run_key"] for t in trials if t.state.name == "WAITING")
    assert waiting == sorted(spec.key() for spec in specs), "its run is queued again, once"
    assert ledger.has_open_runs() == (True, True) and len(study.get_trials()) == 3, "released once"
