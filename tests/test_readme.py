"""The README's examples run, so they cannot go stale."""

import re
import subprocess
import sys
from pathlib import Path

from harness.config.study import load_study
from harness.study.plan import expand

README = (Path(__file__).parent.parent / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_plugin_example_registers_and_builds(tmp_path):
    plugin = tmp_path / "readme_plugin.py"
    plugin.write_text(next(block for block in _blocks("python") if "@register" in block))
    code = ("from harness.registry import load_plugin; from harness.config.model import ModelConfig;"
            "from harness.model.gpt import GPT; import torch;"
            f"load_plugin({str(plugin)!r}); m = GPT(ModelConfig(vocab_size=256, mlp='relu2'));"
            "print(m(torch.zeros(1, 3, dtype=torch.long))[0].shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch.Size([1, 3, 256])"


def test_the_study_example_is_a_valid_study(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(_blocks("yaml")[0])
    study = load_study(path)
    runs = expand(study)
    assert [r.arm for r in runs[:2]] == ["pre", "post"] and len(runs) == 6
    assert expand(load_study(path, profile="gpu"))[0].model.d_model == 768


def test_the_study_example_is_the_shipped_study_written_compactly(tmp_path):
    """Same runs (run keys) as studies/norm_placement.yaml, with and without its GPU profile."""
    path = tmp_path / "study.yaml"
    path.write_text(_blocks("yaml")[0])
    shipped = Path(__file__).parent.parent / "studies" / "norm_placement.yaml"
    for profile in (None, "gpu"):
        keys = [run.key() for run in expand(load_study(path, profile=profile))]
        assert keys == [run.key() for run in expand(load_study(shipped, profile=profile))], profile
