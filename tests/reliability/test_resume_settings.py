"""A run resumed with other execution settings (threads, device, compile, checkpoint interval)
continues in the same MLflow run: those settings are recorded per attempt, never as params, and
a record the store refuses is said once and blocks nothing behind it."""

import json
import signal
import time

import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from harness.tracking.outbox import Outbox
from tests.faults import FAULTS
from tests.reliability.conftest import ablate, start_ablate

# the run, shorter: one layer, a checkpoint every 100 steps
RUN = """
name: resume_threads
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 600, batch_size: 8, lr: 3.0e-3, eval_interval: 100, log_interval: 50}
data: {dataset: pydoc, tokenizer: char}
seeds: [0]
"""


def _run(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resume_threads").experiment_id
    [run] = client.search_runs([experiment], "tags.`ablate.kind` = 'arm_run'")
    return client, run


# torch.compile would resume as well; its minute of compiling on the CPU is left to the GPU-path test
@pytest.mark.parametrize("setting", ["base.train.threads=1", "base.train.checkpoint_interval=0"])
def test_a_run_interrupted_and_resumed_with_other_execution_settings_finishes_in_the_same_mlflow_run(tmp_path,
                                                                                                       setting):
    (tmp_path / "run.yaml").write_text(RUN)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = start_ablate(tmp_path, "train", "run.yaml", "--tracking-uri", uri)
    deadline = time.time() + 240
    while not list(tmp_path.glob("runs/resume_threads/*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    FAULTS["runs interrupted"] += 1

    resumed = ablate(tmp_path, "train", "run.yaml", "--tracking-uri", uri, "--set", setting, timeout=900)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "refused" not in resumed.stderr and "differ from what an earlier attempt" not in resumed.stderr
    client, run = _run(uri)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "finished"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert steps == [100, 200, 300, 400, 500, 600], "the curve goes on past the interruption"
    # what may differ between attempts is a tag of each attempt, not a param of the run
    assert not {"train.threads", "train.compile", "train.checkpoint_interval", "threads", "device"} & set(
        run.data.params)
    assert run.data.tags["attempt"] == "2" and {"attempt_1", "attempt_2"} <= set(run.data.tags)
    key, value = setting.removeprefix("base.").split("=")
    first_attempt, second_attempt = (json.loads(run.data.tags[f"attempt_{n}"]) for n in (1, 2))
    assert second_attempt[key].lower() == value and first_attempt[key].lower() != value
    assert first_attempt["execution_start_step"] == 0 and second_attempt["execution_start_step"] >= 100
    FAULTS["runs recovered"] += 1

    # no later command of the study waits for the store
    started = time.time()
    report = ablate(tmp_path, "report", "resume_threads", "--tracking-uri", uri)
    again = ablate(tmp_path, "train", "run.yaml", "--tracking-uri", uri, "--set", setting)
    assert report.returncode == 0 and again.returncode == 0, report.stderr + again.stderr
    assert "already finished" in again.stdout and time.time() - started < 120


def test_a_record_the_store_refuses_is_said_once_and_the_records_behind_it_are_sent(tmp_path, capfd):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("refusals")).info.run_id
    client.log_batch(run_id, params=[Param("train.lr", "0.003")])
    outbox = Outbox(client, run_id, tmp_path / "run" / "unsent_tracking.json", label="base seed=0")
    outbox.params({"train.lr": "0.001"})  # MLflow never changes a param: refused, not an outage
    outbox.metrics([("val_loss", 2.5, 0, 100)])
    outbox.tags({"state": "finished"})
    assert outbox.flush(wait=True), "nothing is left waiting behind the refused record"
    outbox.close()
    run = client.get_run(run_id)
    assert run.data.metrics["val_loss"] == 2.5 and run.data.tags["state"] == "finished"
    assert run.data.params["train.lr"] == "0.003"
    assert not (tmp_path / "run" / "unsent_tracking.json").exists()
    warnings = capfd.readouterr().err
    assert warnings.count("refused params train.lr of run base seed=0") == 1, warnings
    FAULTS["refused records skipped"] += 1
