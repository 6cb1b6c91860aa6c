"""Every file ablate writes fails at once with one line naming the file and its errno, never a
retry, never a traceback, never a partial file left behind, and nothing already logged is lost:
a read-only tracking store and folder, a read-only home (the cache), a disk that really fills
while a checkpoint is written (a small tmpfs), and a file-size limit."""

import os
import resource
import subprocess
import time

import pytest

from tests.faults import FAULTS
from tests import warm
from tests.reliability.conftest import ablate, arm_runs

STUDY = """
name: faults
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 20, batch_size: 2, eval_interval: 10}
data: {val_windows: 2}
grid: {model.placement: [pre, post]}
seeds: 1
report: {baseline: pre}
"""
# a checkpoint of about 19 MB (weights and AdamW's two moments): more than the small disk holds
BIG = STUDY.replace("n_layer: 1, d_model: 16", "n_layer: 2, d_model: 256")


@pytest.fixture
def disk(tmp_path):
    """A small file system of our own (tmpfs): mount(path, size, read_only) mounts it at `path`."""
    mounted = []

    def mount(path, size="64M", read_only=False):
        path.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"CI runs as root and must be able to mount a tmpfs: {result.stderr}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def _one_line(result, *named):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "does not answer" not in result.stderr, result.stderr
    assert "unreachable" not in result.stderr, "a local file fault is not an outage"
    last = result.stderr.strip().splitlines()[-1]
    for words in named:
        assert words in last, last


def test_a_read_only_study_folder_and_store_are_one_line_each(tmp_path, disk):
    folder = disk(tmp_path / "work")
    (folder / "study.yaml").write_text(STUDY)
    assert ablate(folder, "run", "study.yaml").returncode == 0
    remount(folder, "ro")
    started = time.time()
    _one_line(ablate(folder, "run", "study.yaml"), str(folder / "mlflow.db"), "readonly")
    _one_line(ablate(folder, "report", "faults"), "reports/faults/results.csv", "Read-only file system")
    _one_line(ablate(folder, "leaderboard"), "reports/leaderboard.csv", "Read-only file system")
    assert time.time() - started < 120, "nothing is waited for"
    assert not [p for p in folder.rglob("*.tmp")]
    FAULTS["disk and permission faults"] += 3


def test_a_fresh_read_only_folder_is_named_not_called_unreachable(tmp_path, disk):
    folder = disk(tmp_path / "work")
    (folder / "study.yaml").write_text(STUDY)
    remount(folder, "ro")
    _one_line(ablate(folder, "run", "study.yaml"), str(folder / "mlflow.db"), "Read-only file system")
    FAULTS["disk and permission faults"] += 1


def test_a_read_only_home_names_the_cache_folder_and_what_to_set(tmp_path, disk):
    home = disk(tmp_path / "home", size="1M", read_only=True)
    (tmp_path / "study.yaml").write_text(STUDY)
    env = {key: value for key, value in os.environ.items() if key not in ("ABLATE_CACHE_DIR", "XDG_CACHE_HOME")}
    _one_line(ablate(tmp_path, "run", "study.yaml", env={**env, "HOME": str(home), "MPLCONFIGDIR": str(tmp_path)}),
              str(home / ".cache"), "ABLATE_CACHE_DIR")
    FAULTS["disk and permission faults"] += 1


def _no_partial_checkpoint(folder):
    leftovers = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".checkpoint")]
    assert leftovers == [], f"partial files left behind: {leftovers}"


def test_a_disk_that_fills_while_a_checkpoint_is_written(tmp_path, disk):
    folder = disk(tmp_path / "work", size="12M")
    (folder / "study.yaml").write_text(BIG)
    full = ablate(folder, "run", "study.yaml")
    _one_line(full, "No space left on device", "checkpoint.pt", "free some space")
    _no_partial_checkpoint(folder)
    uri = f"sqlite:///{folder}/mlflow.db"
    [run] = arm_runs(uri, "faults")
    assert run.data.tags["state"] == "failed" and "No space left" in run.data.tags["failure_reason"]
    FAULTS["disk and permission faults"] += 1

    remount(folder, "size=128M")  # space freed: the same command finishes the study
    again = ablate(folder, "run", "study.yaml")
    assert again.returncode == 0, again.stderr
    runs = arm_runs(uri, "faults")
    assert len(runs) == 2 and {r.data.tags["state"] for r in runs} == {"finished"}
    assert run.info.run_id in {r.info.run_id for r in runs}, "the failed run resumed in its own MLflow run"
    FAULTS["runs recovered"] += 1


def test_a_local_store_on_a_full_disk_is_named_so_and_takes_its_records_once_space_is_freed(tmp_path, disk, capsys):
    """While a checkpoint fills the disk, the run's MLflow store (sqlite, same disk) cannot write
    either: the warning names a store that cannot be written, not one that does not answer, and
    the records go once the space is back."""
    from mlflow.tracking import MlflowClient

    from harness.tracking.outbox import Outbox

    folder = disk(tmp_path / "work", size="8M")
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    run_id = client.create_run(client.create_experiment("full")).info.run_id
    filler = folder / "filler"
    with open(filler, "wb") as out, pytest.raises(OSError):
        while True:
            out.write(b"\0" * 2**16)
            out.flush()
    # its unsent records are kept on another disk here; on the full one, keeping them fails the run
    outbox = Outbox(client, run_id, tmp_path / "run" / "unsent_tracking.json", "pre seed=0")
    outbox.metrics([("train_loss", float(step), 0, step) for step in range(1, 2001)])
    assert not outbox.flush(wait=True)
    warning = capsys.readouterr().err
    assert "cannot be written for run pre seed=0" in warning and "does not answer" not in warning, warning
    filler.unlink()
    assert outbox.flush(wait=True), outbox.last_error
    outbox.close()
    assert len(client.get_metric_history(run_id, "train_loss")) == 2000
    FAULTS["disk and permission faults"] += 1


def test_a_file_size_limit_while_a_checkpoint_is_written(tmp_path):
    (tmp_path / "study.yaml").write_text(BIG)
    limit = 8 * 2**20  # the stores fit; the checkpoint does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = ablate(tmp_path, "run", "study.yaml", preexec_fn=limited)
    _one_line(result, "File too large", "checkpoint.pt")
    _no_partial_checkpoint(tmp_path)
    FAULTS["disk and permission faults"] += 1


def test_a_disk_that_fills_while_a_corpus_is_tokenized(tmp_path, disk):
    """The token files of a 6 MB corpus (12 MB of character ids) on a 5 MB cache: one line naming
    the disk; nothing half-written is left to trust, and with space the same command prepares it."""
    cache = disk(tmp_path / "cache", size="5M")
    (tmp_path / "corpus.txt").write_text("a line of text for the token files to hold.\n" * 140_000)
    (tmp_path / "study.yaml").write_text(
        "name: fullcache\nbase:\n  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}\n"
        "  train: {steps: 2, batch_size: 4, eval_interval: 2}\ngrid:\n  model.norm: [layernorm, rmsnorm]\nseeds: 1\n"
        "data: {dataset: {name: text, path: corpus.txt}, val_windows: 4}\n")
    full = subprocess.run([*warm.command(), "prepare", "study.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ABLATE_CACHE_DIR": str(cache)})
    _one_line(full, "No space left on device", "free some space")
    assert not list(cache.glob("tokens/*/*.bin")) and not list(cache.glob("tokens/*/meta.json"))
    remount(cache, "size=64M")
    again = subprocess.run([*warm.command(), "prepare", "study.yaml"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "ABLATE_CACHE_DIR": str(cache)})
    assert again.returncode == 0, again.stderr
    assert len(list(cache.glob("tokens/*/meta.json"))) == 1 and not list(cache.glob("tokens/*/.*.tmp"))
