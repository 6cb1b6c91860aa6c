"""The command line itself: a version, help on every option, and the study schema for editors."""

import json
import os
import subprocess
from pathlib import Path

import click
import jsonschema
import pytest
import typer.main
import yaml

from harness import __version__
from harness.cli import app

from tests import warm

ROOT = Path(__file__).parent.parent


def ablate(*args):
    return subprocess.run([*warm.command(), *args], capture_output=True, text=True, timeout=120)


def test_version():
    result = ablate("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ablate {__version__}"


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        yield (*prefix, name), command


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    for path, command in _commands(root):
        assert (command.help or "").strip(), f"ablate {' '.join(path)} has no help"
        for parameter in command.params:
            if isinstance(parameter, click.Option) and parameter.name != "help":
                assert (parameter.help or "").strip(), f"ablate {' '.join(path)} {parameter.opts[0]} has no help"


def test_the_prompt_default_reads_as_words():
    result = subprocess.run([*warm.command(), "generate", "--help"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    assert "[default: (a newline)]" in result.stdout


@pytest.fixture(scope="module")
def schema():
    result = ablate("schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_schema_names_fields_and_registered_variants(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    model = schema["$defs"]["ModelSettings"]["properties"]
    assert {"n_layer", "d_model", "vocab_size", "norm", "mlp"} <= set(model)
    names = model["mlp"]["anyOf"][0]["enum"]
    assert {"gelu", "swiglu", "geglu", "relu"} <= set(names)
    assert "lr" in schema["$defs"]["TrainSettings"]["properties"]


@pytest.mark.parametrize("study", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_validates_against_the_schema_and_points_to_it(schema, study):
    text = study.read_text()
    jsonschema.validate(yaml.safe_load(text), schema)
    assert text.startswith("# yaml-language-server: $schema=study.schema.json")


def test_the_committed_schema_is_what_ablate_schema_prints(schema):
    committed = json.loads((ROOT / "studies" / "study.schema.json").read_text())
    assert committed == schema, "run: ablate schema > studies/study.schema.json"


def test_the_schema_catches_a_typo_an_editor_would_underline(schema):
    study = yaml.safe_load((ROOT / "studies" / "norm_placement.yaml").read_text())
    study["base"]["model"]["n_layers"] = 4
    with pytest.raises(jsonschema.ValidationError, match="n_layers"):
        jsonschema.validate(study, schema)


def test_help_shows_flags_as_flags_and_every_help_text_whole():
    """A flag takes no value (no "<bool>" beside it), and a help text's brackets are not eaten as
    rich markup."""
    root = typer.main.get_command(app)
    for path, command in _commands(root):
        if isinstance(command, click.Group):
            continue
        shown = subprocess.run([*warm.command(), *path, "--help"], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "COLUMNS": "250"}).stdout
        assert "<bool>" not in shown, f"ablate {' '.join(path)}"
        for parameter in command.params:
            words = (parameter.help or "").split()
            if isinstance(parameter, click.Option) and parameter.name != "help" and words:
                assert words[-1] in shown, f"ablate {' '.join(path)} {parameter.opts[0]}: {parameter.help!r}"


def test_a_table_at_80_columns_folds_and_cuts_nothing():
    import io

    import pandas as pd
    from rich.console import Console

    from harness.cli.common import table as _table

    frame = pd.DataFrame({"study": ["norm_placement"], "arm": ["modern_block_with_a_long_name"], "finished": [3],
                          "running": [1], "queued": [2], "interrupted": [0], "diverged": [0], "failed": [0],
                          "missing": [0], "last val_loss": [3.2]})
    out = io.StringIO()
    Console(file=out, width=80).print(_table(frame, "status"))
    assert "…" not in out.getvalue() and max(map(len, out.getvalue().splitlines())) <= 80
    arm = "".join(line.split("│")[2].strip() for line in out.getvalue().splitlines() if line.startswith("│"))
    assert arm == "modern_block_with_a_long_name"


@pytest.mark.parametrize("override,words", [
    ("base.train.lrr=0.1", "(did you mean 'lr'?)"),
    ("base.model.mlp=relu2", "--plugin FILE"),  # a plugin's variant: say how plugins are loaded
    ("grid={model.placement: [pre, psot]}", "did you mean 'post'?"),
    ("report.metric=tokens_per_s", "never a verdict"),  # speed measures the machine as much as the variant
    ("=3", "'' is not a setting's path"),
    ("base..train.lr=3", "'base..train.lr' is not a setting's path"),
    ("name=a b", "'a b' is not allowed here: use letters, digits, _ . -"),  # in words, not as a regex
    ("base.train.steps=yes", "base.train.steps: true is a yes/no"),  # YAML's yes is not one step
    ("base.model.n_layer=on", "base.model.n_layer: true is a yes/no"),
])
def test_a_misspelt_set_is_blamed_on_the_set_not_on_the_study_file(tmp_path, override, words):
    study = Path(__file__).parents[1] / "studies" / "norm_placement.yaml"
    result = subprocess.run([*warm.command(), "run", str(study), "--dry-run", "--set", "seeds=3",
                             "--set", override], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"ablate: error: --set {override}: ") and words in result.stderr, result.stderr


def test_a_broken_study_file_is_still_blamed_on_the_file(tmp_path):
    (tmp_path / "study.yaml").write_text("name: broken\nbase: {train: {lrr: 0.1}}\n")
    result = subprocess.run([*warm.command(), "run", "study.yaml", "--dry-run", "--set", "seeds=2"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("ablate: error: study.yaml: base.train.lrr"), result.stderr
