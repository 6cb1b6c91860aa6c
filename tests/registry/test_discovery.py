"""A new built-in variant is one file in variants/: found at the next command, with no
edit of pyproject.toml and no reinstall."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

VARIANTS = Path(__file__).parents[2] / "variants"

SQUARED_RELU = '''
"""Squared ReLU MLP."""

from torch import nn

from harness.registry import NoOptions, mark_residual_output, register


@register("mlp", "relu2_builtin", NoOptions)
class SquaredReLU(nn.Module):
    """Squared ReLU MLP (So et al. 2021, Primer): down(relu(up(x))^2)."""

    def __init__(self, cfg, options, layer):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.down = mark_residual_output(nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias))

    def forward(self, x):
        return self.down(self.up(x).relu().square())
'''


def test_a_new_file_in_variants_is_found_without_a_reinstall(tmp_path):
    shutil.copytree(VARIANTS, tmp_path / "variants", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "variants" / "relu2.py").write_text(SQUARED_RELU)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def ablate(*args):
        result = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = json.loads(ablate("variants", "--json"))
    assert "relu2_builtin" in listed["mlp"] and {"gelu", "swiglu"} <= set(listed["mlp"])
    assert "variants.relu2 (package ablate)" in ablate("variants")
    plan = ablate("run", "--dry-run", "--set", "base.model.n_layer=1", "--set", "base.model.mlp=relu2_builtin",
                  "--set", "base.train.steps=2", str(_one_arm_study(tmp_path)))
    assert "1 runs, 0 finished already" in plan


def _one_arm_study(folder: Path) -> Path:
    path = folder / "study.yaml"
    path.write_text("name: discovery\nbase: {model: {d_model: 32, n_head: 2, context_length: 16}}\n")
    return path
