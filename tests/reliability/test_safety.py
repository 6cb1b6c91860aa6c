"""Nothing in a study, a checkpoint or a URL can run code or leak a password, and plugin
code runs only when the user names it."""

import json
import os

import torch
from mlflow.tracking import MlflowClient

from tests.conftest import ledger_study
from tests.reliability.conftest import ablate


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creates the marker file when loaded


def test_yaml_that_would_construct_python_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "study.yaml").write_text(
        f"name: evil\nbase: !!python/object/apply:os.system [\"touch {marker}\"]\nseeds: 1\n")
    result = ablate(tmp_path, "run", "study.yaml", "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not valid YAML" in result.stderr
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "model": _RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.pt")
    result = ablate(tmp_path, "generate", "evil.pt")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "evil.pt cannot be read" in result.stderr
    assert not marker.exists()


def test_plugin_code_is_imported_only_when_named(tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "nosy_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert ablate(tmp_path, "variants").returncode == 0
    assert not marker.exists(), "a plugin file next to the user's work was imported unasked"
    assert ablate(tmp_path, "variants", "--plugin", "nosy_plugin.py").returncode == 0
    assert marker.exists()


STUDY = """
name: secretive
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 6, batch_size: 4, log_interval: 3, eval_interval: 3}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 1
"""


def test_passwords_in_storage_and_tracking_urls_never_leave_them(tmp_path, databases):
    """A study on PostgreSQL (ledger and MLflow store, both with a password): the password is
    in no output, param, tag, artifact, report, ledger attribute or file the study writes."""
    storage, tracking = databases
    password = tracking.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert len(password) >= 6
    (tmp_path / "study.yaml").write_text(STUDY)
    result = ablate(tmp_path, "run", "study.yaml", "--storage", storage, "--tracking-uri", tracking)
    assert result.returncode == 0, result.stderr
    planned = ablate(tmp_path, "run", "study.yaml", "--storage", storage, "--tracking-uri", tracking, "--jobs", "0")
    assert "--storage postgresql://ablate:***@" in planned.stderr  # the worker command it prints
    report = ablate(tmp_path, "report", "secretive", "--tracking-uri", tracking)
    unreachable = ablate(tmp_path, "report", "secretive", "--tracking-uri",
                         tracking.replace("127.0.0.1", "127.0.0.1:9"))
    assert unreachable.returncode == 2

    seen = [result.stdout, result.stderr, planned.stdout, planned.stderr, report.stdout, report.stderr,
            unreachable.stdout, unreachable.stderr]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("secretive")
    seen.append(json.dumps(experiment.tags))
    for run in client.search_runs([experiment.experiment_id]):
        seen += [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name]
        for artifact in client.list_artifacts(run.info.run_id):
            if not artifact.is_dir:
                seen.append(open(client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / "dl")),
                                 errors="replace").read())
    for trial in ledger_study(storage, "secretive").trials:
        seen.append(json.dumps(trial.user_attrs))
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                seen.append(handle.read().decode("latin-1"))
    assert len(seen) > 20
    leaks = [text[:200] for text in seen if password in text]
    assert not leaks, leaks


def test_a_study_named_like_a_path_writes_only_under_reports_and_runs(tmp_path):
    """An MLflow experiment can be named anything: `ablate report` and `ablate clean` by that
    name stay inside their folders."""
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    (work / "study.yaml").write_text("name: plain\nbase:\n  model: {n_layer: 1, d_model: 16, n_head: 2, "
                                     "context_length: 16}\n  train: {steps: 4, batch_size: 2, eval_interval: 4}\n"
                                     "data: {val_windows: 2}\nseeds: 1\n")
    assert ablate(work, "run", "study.yaml").returncode == 0
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment_id = client.get_experiment_by_name("plain").experiment_id
    for hostile in ("../../escaped", str(tmp_path / "absolute")):
        client.rename_experiment(experiment_id, hostile)
        reported = ablate(work, "report", hostile)
        assert reported.returncode == 0, reported.stderr
        cleaned = ablate(work, "clean", hostile)
        assert cleaned.returncode == 0, cleaned.stderr
    written = {p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("*") if p.is_file()}
    assert {parts[:2] for parts in written} == {("deep", "work")}, written
    assert {p.name for p in (work / "reports").iterdir()} >= {"_.._escaped", "_" + str(tmp_path / "absolute")[1:]
                                                               .replace("/", "_")}


def test_a_password_never_shows_in_a_message_even_inside_a_library_error(tmp_path):
    from harness.redaction import error_line, redact

    assert redact("postgresql://u:hun/ter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert error_line(ConnectionError("cannot reach http://u:hunter2@127.0.0.1:1/api (refused)\nmore")) == \
        "cannot reach http://u:***@127.0.0.1:1/api (refused)"
    (tmp_path / "study.yaml").write_text("name: s\nbase:\n  model: {n_layer: 1, d_model: 16, n_head: 2, "
                                         "context_length: 16}\n  train: {steps: 2, batch_size: 2}\nseeds: 1\n")
    for uri, password in (("http://u:hunter2@127.0.0.1:1", "hunter2"),
                          ("postgresql://u:hun/ter2@127.0.0.1:1/mlflow", "hun/ter2")):
        result = ablate(tmp_path, "run", "study.yaml", "--tracking-uri", uri, "--dry-run",
                        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "unreachable" in result.stderr and "u:***@127.0.0.1:1" in result.stderr
        assert password not in result.stdout + result.stderr


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path):
    (tmp_path / "run.yaml").write_text("name: one\nbase:\n  model: {n_layer: 1, d_model: 16, n_head: 2, "
                                       "context_length: 16}\n  train: {steps: 4, batch_size: 2, eval_interval: 4}\n"
                                       "data: {val_windows: 2}\n")
    assert ablate(tmp_path, "train", "run.yaml").returncode == 0
    [checkpoint] = tmp_path.glob("runs/one/*/checkpoint.pt")
    checkpoint.write_bytes(os.urandom(4096))
    # a fresh tracking store each time: for the store the first holds, the run is finished already
    for attempt in range(2):  # and again: the message does not change, and says how to get out
        result = ablate(tmp_path, "train", "run.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/other{attempt}.db")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"checkpoint {checkpoint.relative_to(tmp_path)} cannot be read: it is damaged" in result.stderr
        assert "Delete it to start its run again" in result.stderr and "weights_only" not in result.stderr
    checkpoint.unlink()
    restarted = ablate(tmp_path, "train", "run.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/other2.db")
    assert restarted.returncode == 0 and "finished after 4 steps" in restarted.stdout, "deleting it restarts the run"


def test_any_damage_to_a_checkpoint_is_one_message(tmp_path):
    """torch's safe unpickler meets damaged bytes with errors of many types (IndexError, KeyError,
    UnpicklingError, ...): every one is the same RunFailed naming the file."""
    import random

    from harness.training.checkpoint import load_checkpoint
    from harness.training.faults import RunFailed

    whole = tmp_path / "whole.pt"
    torch.save({"format": 2, "model": {"w": torch.ones(64)}}, whole)
    data = whole.read_bytes()
    draw = random.Random(0)
    damaged = [draw.randbytes(draw.randint(1, 4096)) for _ in range(150)]
    damaged += [data[:cut] for cut in range(0, len(data), max(1, len(data) // 40))]
    damaged += [bytes(b ^ 0xFF if i == spot else b for i, b in enumerate(data))
                for spot in draw.sample(range(len(data)), 40)]
    path = tmp_path / "checkpoint.pt"
    for contents in damaged:
        path.write_bytes(contents)
        try:
            load_checkpoint(path)
        except RunFailed as err:
            assert str(path) in str(err)
