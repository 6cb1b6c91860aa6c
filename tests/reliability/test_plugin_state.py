"""A plugin cannot change every arm's numbers behind their run keys: importing it must leave
PyTorch's process-wide state (default dtype, determinism and TF32 switches, the global random
state, torch's functions) as it found it, or the study is refused naming the plugin and what it
changed; every plugin a study loads enters the key of every run; and what ran is recorded."""

import textwrap

import pytest
import torch
from mlflow.tracking import MlflowClient

from harness import Study
from harness.errors import AblateError
from tests.faults import FAULTS
from tests.reliability.conftest import ablate

STUDY = """
name: plugged
plugins: [extra.py]
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 10, batch_size: 2, eval_interval: 10}
data: {val_windows: 2}
seeds: 1
"""
HARMLESS = "# a plugin file with helpers and no variant: still code that ran where the study trains\nSCALE = 1.0\n"


@pytest.mark.parametrize("change,named", [
    ("torch.set_default_dtype(torch.float64)", "the default dtype"),
    ("torch.nn.functional.gelu = lambda x, approximate='none': x", "torch.nn.functional.gelu"),
    ("torch.Tensor.softmax = lambda self, dim: self", "torch.Tensor.softmax"),
    ("torch.use_deterministic_algorithms(True)", "deterministic algorithms"),
    ("torch.set_float32_matmul_precision('medium')", "float32 matmul precision"),
    ("torch.manual_seed(1234)", "the global random state"),
    ("torch.nn.LayerNorm.forward = lambda self, x: x", "torch.nn.LayerNorm.forward"),
])
def test_a_plugin_that_changes_torch_global_state_is_refused_naming_it(tmp_path, change, named):
    (tmp_path / "study.yaml").write_text(STUDY)
    (tmp_path / "extra.py").write_text(f"import torch\n{change}\n")
    state = (torch.get_default_dtype(), torch.nn.functional.gelu, torch.Tensor.softmax,
             torch.nn.LayerNorm.forward, torch.get_float32_matmul_precision())
    try:
        result = ablate(tmp_path, "run", "study.yaml")
    finally:
        assert state == (torch.get_default_dtype(), torch.nn.functional.gelu, torch.Tensor.softmax,
                         torch.nn.LayerNorm.forward, torch.get_float32_matmul_precision())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())
    assert "extra.py changed PyTorch's global state" in message and named in message, message
    assert not (tmp_path / "runs").exists(), "nothing trained"
    FAULTS["plugins refused for global state"] += 1


def test_a_plugin_given_on_the_command_line_is_checked_too(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("plugins: [extra.py]\n", ""))
    (tmp_path / "double.py").write_text("import torch\ntorch.set_default_dtype(torch.float64)\n")
    result = ablate(tmp_path, "run", "study.yaml", "--plugin", "double.py")
    assert result.returncode == 2 and "double.py changed PyTorch's global state" in result.stderr, result.stderr


def test_a_variant_that_changes_global_state_while_the_model_is_built_is_refused(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("base:\n  model: {", "base:\n  model: {mlp: sneaky, "))
    (tmp_path / "extra.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        from harness.registry import NoOptions, register


        @register("mlp", "sneaky", NoOptions)
        def sneaky(cfg, options, layer):
            torch.set_default_dtype(torch.float64)
            return nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU())
    """))
    result = ablate(tmp_path, "run", "study.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "building the model changed PyTorch's global state" in result.stderr and "default dtype" in result.stderr


def test_every_plugin_a_study_loads_enters_every_run_key(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    (tmp_path / "extra.py").write_text(HARMLESS)
    keys = [spec.key() for spec in Study.load(tmp_path / "study.yaml").runs]
    (tmp_path / "extra.py").write_text(HARMLESS + "\nSOMETHING_ELSE = 1\n")
    edited = [spec.key() for spec in Study.load(tmp_path / "study.yaml").runs]
    assert keys != edited, "an edited plugin makes every run of the study a new run"
    (tmp_path / "plain.yaml").write_text(STUDY.replace("plugins: [extra.py]\n", ""))
    assert [spec.key() for spec in Study.load(tmp_path / "plain.yaml").runs] != edited


def test_what_ran_is_recorded_the_weights_dtype_and_the_autocast_dtype(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY.replace("plugins: [extra.py]\n", ""))
    assert ablate(tmp_path, "run", "study.yaml").returncode == 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("plugged").experiment_id],
                               "tags.`ablate.kind` = 'arm_run'")
    assert run.data.tags["execution_param_dtype"] == "float32"
    assert run.data.tags["execution_autocast_dtype"] == "none"


def test_a_refused_plugin_is_checked_again_when_loaded_again(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    (tmp_path / "extra.py").write_text("import torch\ntorch.manual_seed(7)\n")
    for _ in range(2):
        with pytest.raises(AblateError, match="global random state"):
            Study.load(tmp_path / "study.yaml")
