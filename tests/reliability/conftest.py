"""What the fault tests share: the `ablate` command in a subprocess and reading MLflow back."""

import subprocess

from mlflow.tracking import MlflowClient

from tests import warm

# two placements, one seed each: long enough to be killed in the middle, short enough for CI
STEPS, LOG, EVAL = 400, 10, 50


def two_run_study(name: str) -> str:
    return f"""
name: {name}
base:
  model: {{n_layer: 2, d_model: 32, n_head: 2, context_length: 32}}
  train: {{steps: {STEPS}, batch_size: 4, log_interval: {LOG}, eval_interval: {EVAL}}}
data: {{val_windows: 4}}
grid: {{model.placement: [pre, post]}}
seeds: 1
report: {{baseline: pre}}
"""


def lost_in(tracking_uri: str, runs) -> int:
    """Metric points missing from these runs of a `two_run_study` (see `lost_points`)."""
    return sum(lost_points(tracking_uri, run, STEPS, LOG, EVAL) for run in runs)


def ablate(folder, *args, timeout=600, **popen):
    return subprocess.run([*warm.command(), *args], cwd=folder, capture_output=True, text=True, timeout=timeout,
                          **popen)


def start_ablate(folder, *args, cold=False, **popen):
    """`ablate` in the background; `cold` where the test needs its pid (its workers name it)."""
    return subprocess.Popen([*(warm.COLD if cold else warm.command()), *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def arm_runs(tracking_uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], "tags.`ablate.kind` = 'arm_run'", max_results=1000)


def lost_points(tracking_uri: str, run, steps: int, log_interval: int, eval_interval: int) -> int:
    """Metric points a finished run should have in MLflow and does not; a point logged twice
    fails the test outright."""
    client = MlflowClient(tracking_uri)
    expected = {"train_loss": {s for s in range(1, steps + 1) if s % log_interval == 0 or s == steps},
                "val_loss": {s for s in range(1, steps + 1) if s % eval_interval == 0 or s == steps}}
    lost = 0
    for metric, want in expected.items():
        got = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert len(got) == len(set(got)), f"{metric} logged twice at some step: {sorted(got)}"
        lost += len(want - set(got))
    return lost
