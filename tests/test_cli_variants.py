"""`ablate variants`, built-in and plugin variants, and user errors on the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import warm
from tests.registry.test_registry import BUILT_IN

FIXTURES = Path(__file__).parent / "fixtures"


def ablate(*args, env=None):
    command = [*warm.command(), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_json_lists_every_slot_and_at_least_the_built_in_names():
    result = ablate("variants", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    for slot, names in BUILT_IN.items():
        assert names <= set(listed[slot])


def test_table_shows_slot_options_and_origin():
    result = ablate("variants")
    assert result.returncode == 0, result.stderr
    assert "n_kv_heads=required" in result.stdout
    assert "variants.attention (package ablate)" in result.stdout


def test_plugin_file_appears_and_builds_a_model():
    plugin = FIXTURES / "layerscale_plugin.py"
    result = ablate("variants", "--plugin", str(plugin))
    assert result.returncode == 0, result.stderr
    assert "pre_layerscale" in result.stdout and "initial_scale=0.1" in result.stdout
    assert "plugin file" in result.stdout

    from harness.registry import load_plugin
    from tests.conftest import tiny_model

    load_plugin(str(plugin))
    model = tiny_model(placement={"name": "pre_layerscale", "initial_scale": 0.5})
    assert model.blocks[0].attention_scale.detach().eq(0.5).all()


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """The example plugin package, pip-installed (with its entry point) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(FIXTURES / "ablate-relu2")], check=True, timeout=300)
    return target


def test_installed_plugin_package_registers_through_its_entry_point(installed_plugin):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    result = ablate("variants", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "relu2" in json.loads(result.stdout)["mlp"]
    table = ablate("variants", env=env).stdout
    assert "ablate_relu2.mlp (package ablate-relu2)" in table

    build = [sys.executable, "-c",
             "from harness.config.model import ModelConfig; from harness.model.gpt import GPT; import torch;"
             "m = GPT(ModelConfig(vocab_size=256, mlp={'name': 'relu2', 'hidden_ratio': 2}));"
             "print(type(m.blocks[0].mlp).__name__, m(torch.zeros(1, 4, dtype=torch.long))[0].shape)"]
    built = subprocess.run(build, capture_output=True, text=True, env=env, timeout=120)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == "SquaredReLU torch.Size([1, 4, 256])"


@pytest.mark.parametrize("args,message", [
    (["variants", "--plugin", "no_such_module_anywhere"], "plugin module 'no_such_module_anywhere' was not found"),
    (["variants", "--plugin", "missing/plugin.py"], "plugin file 'missing/plugin.py' does not exist"),
    (["variants", "--plugin", "/etc/passwd"], "plugin file '/etc/passwd' is not a Python file"),  # was a traceback
])
def test_user_errors_exit_2_with_one_message_and_no_traceback(args, message):
    result = ablate(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_broken_plugin_file_is_reported_as_the_plugins_fault(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from harness.registry import register\n@register('mlp', 'gelu')\nclass Clash: '''x'''\n")
    result = ablate("variants", "--plugin", str(broken))
    assert result.returncode == 2
    assert "registered twice" in result.stderr and "Traceback" not in result.stderr
