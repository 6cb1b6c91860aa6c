"""Every queued run is claimed by exactly one worker, also on the default sqlite ledger.

Optuna hands a waiting trial over by reading its state and then setting it to RUNNING; on
sqlite, which has no SELECT ... FOR UPDATE, two processes could both read WAITING and both
train the run, into the same MLflow run. The ledger's sqlite transactions take the write
lock from their start, so the read and the write are one step."""

import collections
import subprocess
import sys

from harness.config.run import RunSpec
from harness.study.ledger import Ledger

CLAIMER = """
import os, sys
from harness.config.run_state import RunState
from harness.study.ledger import Ledger

ledger = Ledger(sys.argv[1], "race", "plan")
log = sys.argv[2]

def train(trial, key):
    with open(log, "a") as file:
        file.write(f"{key} {os.getpid()}\\n")
    return RunState.FINISHED, 0.0

while ledger.has_open_runs()[1]:
    ledger.run_next(train)
"""


def test_concurrent_claimers_on_sqlite_never_take_the_same_run(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    ledger = Ledger(url, "race", "plan")
    ledger.open("parent", "val_loss")
    specs = [RunSpec(study="race", seed=seed) for seed in range(100)]
    assert ledger.plan(specs, tracked=set()).queued == 100
    log = tmp_path / "claims.txt"
    claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(log)], stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    errors = [claimer.communicate(timeout=600)[1] for claimer in claimers]
    assert all(claimer.returncode == 0 for claimer in claimers), errors
    claims = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert sorted(claims) == sorted(spec.key() for spec in specs)
    assert [key for key, count in claims.items() if count > 1] == []
