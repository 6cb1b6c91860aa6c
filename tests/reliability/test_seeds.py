"""Seeds as users write them: a seed outside what torch takes is refused at load (also by
--dry-run), and a plan shrunk or changed after an interruption just runs: the new plan's runs
are queued, and the old plan's leftovers in the queue are skipped, not an error."""

import signal
import time

import pytest

from tests.faults import FAULTS
from tests.reliability.conftest import ablate, arm_runs, start_ablate

STUDY = """
name: seeded
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 400, batch_size: 2, log_interval: 10, eval_interval: 20}
data: {val_windows: 2}
seeds: 4
"""


@pytest.mark.parametrize("seeds", ["[18446744073709551616]", "[-1]", "[0, 4294967296]"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_seed_outside_32_bits_is_refused_at_load(tmp_path, seeds, dry_run):
    (tmp_path / "study.yaml").write_text(STUDY)
    result = ablate(tmp_path, "run", "study.yaml", "--set", f"seeds={seeds}", *(["--dry-run"] if dry_run else []))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "is outside 0 to 4294967295" in result.stderr
    assert not (tmp_path / "mlflow.db").exists(), "refused before any store is touched"


@pytest.mark.parametrize("then", ["seeds=2", "seeds=[1, 5]"])
def test_a_plan_changed_after_an_interruption_just_runs(tmp_path, then):
    (tmp_path / "study.yaml").write_text(STUDY)
    first = start_ablate(tmp_path, "run", "study.yaml", "--set", "seeds=4")
    deadline = time.time() + 240
    while not list(tmp_path.glob("runs/seeded/*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    FAULTS["runs interrupted"] += 1

    changed = ablate(tmp_path, "run", "study.yaml", "--set", then)
    assert changed.returncode == 0 and "Traceback" not in changed.stderr, changed.stderr
    assert "start workers with the same study file" not in changed.stderr
    wanted = {"seeds=2": {0, 1}, "seeds=[1, 5]": {1, 5}}[then]
    finished = {int(r.data.tags["seed"]) for r in arm_runs(f"sqlite:///{tmp_path}/mlflow.db", "seeded")
                if r.data.tags["state"] == "finished"}
    assert finished == wanted
    again = ablate(tmp_path, "run", "study.yaml", "--set", then)
    assert again.returncode == 0 and "0 queued" in again.stderr, again.stderr
