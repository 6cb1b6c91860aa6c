"""The GPU path's settings, run on the CPU since no GPU may be at hand: bf16 autocast,
torch.compile (inductor, C++ on the CPU) and fused AdamW train a study whose curve stays within
bf16 tolerance of eager fp32, and the runs' tags say what ran."""

import os
import shutil

import pytest
from mlflow.tracking import MlflowClient

from harness import Study

STUDY = """
name: gpu_path
base:
  model: {n_layer: 2, d_model: 64, n_head: 4, context_length: 32}
  train: {steps: 40, batch_size: 8, lr: 3.0e-3, warmup_steps: 5, log_interval: 5, eval_interval: 10, device: cpu}
data: {val_windows: 16}
arms:
  - name: eager_fp32
    set: {train: {dtype: float32, compile: false, fused: false}}
  - name: gpu_settings
    set: {train: {dtype: bfloat16, compile: true, fused: true}}
seeds: 1
"""


def test_bf16_compile_and_fused_adamw_track_eager_fp32(tmp_path):
    if shutil.which("g++") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install g++ for torch.compile on the CPU (.ci/run does)")
        pytest.skip("torch.compile on the CPU needs a C++ compiler (apt-get install g++)")
    (tmp_path / "study.yaml").write_text(STUDY)
    Study.load(tmp_path / "study.yaml", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
               storage=f"sqlite:///{tmp_path}/optuna.db", runs_dir=tmp_path / "runs",
               reports_dir=tmp_path / "reports").run()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r.data.tags["arm"]: r for r in client.search_runs(
        [client.get_experiment_by_name("gpu_path").experiment_id], "tags.`ablate.kind` = 'arm_run'")}
    eager, gpu = runs["eager_fp32"], runs["gpu_settings"]
    assert (eager.data.tags["execution_autocast_dtype"], eager.data.tags["execution_compiled"],
            eager.data.tags["execution_optimizer"]) == ("none", "False", "AdamW")
    assert (gpu.data.tags["execution_autocast_dtype"], gpu.data.tags["execution_compiled"],
            gpu.data.tags["execution_optimizer"]) == ("bfloat16", "True", "AdamW (fused)")
    curves = {arm: [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"),
                                            key=lambda m: m.step)] for arm, run in runs.items()}
    assert len(curves["eager_fp32"]) == len(curves["gpu_settings"]) == 4
    assert curves["eager_fp32"][-1] < curves["eager_fp32"][0] - 0.2, "the eager run learned"
    for fp32, bf16 in zip(curves["eager_fp32"], curves["gpu_settings"]):
        assert bf16 == pytest.approx(fp32, rel=0.02), "bf16 autocast stays within its rounding of fp32"
    assert curves["gpu_settings"] != curves["eager_fp32"], "the bf16 run is not the fp32 run again"
