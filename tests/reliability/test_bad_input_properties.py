"""Property-based: generated malformed studies and command lines are either valid or end with
one message and exit code 2, never a traceback.

Studies are mutations of a valid one (a field set to a value of the wrong kind, a missing or
an unknown key, a strange override) and raw text; each goes through everything `ablate run`
checks before it touches MLflow, and every arm's model is built (on the meta device). The
command lines mix real and made-up commands, options and values, and run in-process.
"""

import contextlib
import copy
import io
import math
import os

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import Study
from harness.cli import main
from harness.errors import AblateError
from harness.model.gpt import GPT

VALID = {
    "name": "props",
    "base": {"model": {"n_layer": 1, "d_model": 16, "n_head": 2, "context_length": 16},
             "train": {"steps": 4, "batch_size": 2, "lr": 1e-3}},
    "data": {"dataset": "pydoc", "tokenizer": "char"},
    "grid": {"model.placement": ["pre", "post"]},
    "seeds": [0, 1],
    "report": {"metric": "val_loss", "baseline": "pre", "goal": "minimize"},
}

PATHS = [
    ("name",), ("description",), ("base",), ("base", "model"), ("base", "train"), ("data",), ("grid",), ("arms",),
    ("seeds",), ("report",), ("report", "baseline"), ("report", "goal"), ("report", "metric"), ("match",),
    ("plugins",), ("profiles",), ("tune",), ("tune", "trials"), ("tune", "space"),
    *[("base", "model", field) for field in ("n_layer", "d_model", "n_head", "context_length", "vocab_size", "norm",
                                             "placement", "attention", "mlp", "position", "init", "dropout",
                                             "attention_backend", "kernels", "bias")],
    *[("base", "train", field) for field in ("steps", "batch_size", "lr", "warmup_steps", "schedule", "grad_accum",
                                             "device", "dtype", "eval_interval", "init_from", "betas")],
    *[("data", field) for field in ("dataset", "tokenizer", "val_fraction")],
    ("grid", "model.placement"), ("grid", "model.d_model"), ("grid", "train.lr"), ("unknown_key",),
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.sampled_from([0, -1, 10**12, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["pre", "post", "rmsnorm", "gqa", "swiglu", "rope", "alibi", "auto", "cpu", "cuda:7", "triton",
                     "minimize", "params", "bf16", "bfloat16", "missing.txt", "base.model.n_layer", "{", "]"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def alias_bomb(depth: int) -> list:
    """A list that YAML writes in a few lines with anchors and aliases and that stands for 10**depth values."""
    bomb = [1] * 10
    for _ in range(depth):
        bomb = [bomb] * 10  # the same list ten times: yaml.safe_dump writes &id001 once and *id001 after
    return bomb


huge = st.sampled_from([10**4, 10**5, 10**6, 10**9, 2**31, 10**12, 10**18])
long_strings = st.integers(1_000, 30_000).map(lambda n: "x" * n)
# a file that is not text, a folder, a file that does not exist
odd_paths = st.sampled_from(["/bin/ls", "/", "/proc/self/status", "missing.txt", "/dev/null"])

GRID_PATHS = ["model.placement", "model.n_layer", "model.d_model", "model.n_head", "model.context_length",
              "train.lr", "train.steps", "train.batch_size", "data.tokenizer", "model.norm"]
grids = st.dictionaries(st.sampled_from(GRID_PATHS),
                        st.one_of(st.lists(st.one_of(scalars, huge), min_size=1, max_size=4),
                                  st.integers(1, 8).map(alias_bomb), st.lists(long_strings, max_size=2)),
                        min_size=1, max_size=3)


@st.composite
def studies(draw):
    study = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = study
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if draw(st.booleans()) and path[-1] in node:
            del node[path[-1]]
        else:
            node[path[-1]] = draw(values)
    return study


@st.composite
def extreme_studies(draw):
    """A valid study pushed to an edge: grids of huge, aliased or long values, sizes far past any
    machine, a data path that is no text file, very long strings."""
    study = copy.deepcopy(VALID)
    edge = draw(st.sampled_from(["grid", "size", "data", "strings", "seeds"]))
    if edge == "grid":
        study["grid"] = draw(grids)
    elif edge == "size":
        section, field = draw(st.sampled_from([("model", "n_layer"), ("model", "d_model"), ("model", "n_head"),
                                               ("model", "context_length"), ("model", "vocab_size"),
                                               ("train", "steps"), ("train", "batch_size")]))
        study["base"][section][field] = draw(huge)
    elif edge == "data":
        study["data"] = {"dataset": {"name": "text", "path": draw(odd_paths)}, "tokenizer": "char"}
    elif edge == "strings":
        key = draw(st.sampled_from(["name", "description", "baseline_arm"]))
        text = draw(long_strings)
        if key == "baseline_arm":
            study["arms"], study["grid"] = [{"name": text[:300]}, {"name": "b", "set": {"model.placement": "post"}}], None
            study["report"]["baseline"] = text[:300]
        else:
            study[key] = text
    else:
        study["seeds"] = draw(st.one_of(huge, st.integers(1, 10**6).map(lambda n: list(range(n)))))
    return {k: v for k, v in study.items() if v is not None}


overrides = st.lists(st.one_of(
    st.builds(lambda path, value: f"{path}={value}", st.sampled_from(
        ["base.model.n_layer", "base.train.lr", "base.model.mlp", "model.norm", "seeds", "name", "base", "x.y.z", ""]),
        st.one_of(st.text(max_size=10), st.integers(-2, 100).map(str), st.sampled_from(["[1, 2", "{a: 1}", "null"]))),
    st.text(max_size=15)), max_size=2)


def _check(study_file, sets=None, profile=None):
    """What `ablate run` checks before MLflow, then every arm's model on the meta device."""
    try:
        study = Study.load(study_file, sets, profile)
    except AblateError as err:
        assert str(err).strip(), "an error without a message"
        return
    for spec in {spec.arm: spec for spec in study.runs}.values():  # seeds share a model
        vocab = study.inputs.dataset(spec).vocab_size
        with torch.device("meta"):
            GPT(spec.model.for_vocabulary(vocab))


def _write(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("study") / "study.yaml"
    path.write_text(text)
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=studies(), sets=overrides, profile=st.sampled_from([None, None, "gpu", "nope"]))
def test_a_generated_study_is_valid_or_fails_with_one_message(tmp_path_factory, study, sets, profile):
    if profile == "gpu":
        study["profiles"] = {"gpu": {"base.model.n_layer": 2}}
    _check(_write(tmp_path_factory, yaml.safe_dump(study, allow_unicode=True)), sets, profile)


@settings(max_examples=40, deadline=60_000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(study=extreme_studies())
def test_a_study_at_the_edges_is_checked_quickly_with_one_message(tmp_path_factory, study):
    """Would have found: an alias bomb in a grid (MemoryError), a binary data.path (AttributeError),
    a billion layers keeping --dry-run busy for minutes, 1.3 million seeds planned silently."""
    _check(_write(tmp_path_factory, yaml.safe_dump(study, allow_unicode=True)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                      st.sampled_from(["name: [", "- a\n- b", "name: x\narms: 3", "name: x\n\tgrid: {}", "---\n...",
                                       "name: x\nseeds: -1", "&a [*a]", "name: !!binary aGk="])))
def test_any_text_as_a_study_is_valid_or_fails_with_one_message(tmp_path_factory, text):
    _check(_write(tmp_path_factory, text))


BAD_STUDY = "name: bad\nbase: {model: {n_head: 3, d_model: 16}}\n"
WORDS = ["run", "worker", "report", "train", "generate", "variants", "status", "clean", "schema", "bogus", "--set",
         "--plugin", "--profile", "--version", "--dry-run",
         "--tracking-uri", "--storage", "--jobs", "--runs-dir", "--json", "--prompt", "--max-new-tokens", "--top-k",
         "--temperature", "--seed", "--device", "--help", "-x", "bad.yaml", "missing.yaml", "nope.pt", "gpu",
         "sqlite:///t.db", "http://127.0.0.1:9", "postgresql://u:p@127.0.0.1:9/db", "-1", "0", "3", "nan", "x=1",
         "base.model.n_layer=0", ""]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=6))
def test_any_command_line_exits_0_or_2_with_one_message(tmp_path_factory, monkeypatch, argv):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "bad.yaml").write_text(BAD_STUDY)
    if argv and argv[0] == "run":
        argv = [*argv, "--dry-run"]  # a valid study would only be planned, never trained
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    monkeypatch.setattr("sys.argv", ["ablate", *argv])
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os.chdir(cwd)
    assert code in (0, 2), (argv, code, stderr.getvalue()[-2000:])
    assert "Traceback" not in stderr.getvalue() + stdout.getvalue(), (argv, stderr.getvalue()[-2000:])
    if code == 2:  # the message, or the usage when no command was given
        assert (stderr.getvalue() or stdout.getvalue()).strip(), (argv, "exit 2 without a message")


def test_the_study_strategy_starts_from_a_valid_study(tmp_path_factory):
    runs = Study.load(_write(tmp_path_factory, yaml.safe_dump(VALID))).runs
    assert len(runs) == 4 and not math.isnan(runs[0].train.lr)


@pytest.mark.parametrize("text", [BAD_STUDY, "name: [", "name: x\narms: 3"])
def test_known_malformed_studies_fail_with_one_message(tmp_path_factory, text):
    with pytest.raises(AblateError):
        Study.load(_write(tmp_path_factory, text))


def _exit_code(argv: list[str], folder) -> tuple[int, str]:
    """`ablate *argv` run in-process in `folder`: (exit code, what it wrote)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            import sys
            saved, sys.argv = sys.argv, ["ablate", *argv]
            try:
                main()
            finally:
                sys.argv = saved
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os.chdir(cwd)
    return code, stdout.getvalue() + stderr.getvalue()


def _checkpoint() -> dict:
    from harness.config.model import ModelConfig
    from harness.data.tokenizers import char_tokenizer

    config = ModelConfig(vocab_size=10, context_length=8, n_layer=1, n_head=2, d_model=8)
    return {"format": 2, "model_config": config.model_dump(mode="json"), "model": GPT(config).state_dict(),
            "tokenizer": char_tokenizer("abcdefghij").state()}


@st.composite
def damaged_checkpoints(draw):
    """A checkpoint that loads safely (right format, plain tensors and containers) with a part
    missing or replaced: what a bad copy, an older writer or a hand edit leaves."""
    payload = _checkpoint()
    part = draw(st.sampled_from(["model_config", "model", "tokenizer"]))
    how = draw(st.sampled_from(["delete", "replace", "field", "vocabulary"]))
    if how == "vocabulary":  # a tokenizer of another size than the model's table
        payload["tokenizer"]["chars"] = "ab" + draw(st.text(alphabet="cdefghijklmnopq", max_size=14))
    elif how == "delete":
        del payload[part]
    elif how == "replace":
        payload[part] = draw(values)
    elif part == "model":  # a weight missing, or of the wrong shape
        key = draw(st.sampled_from(sorted(payload["model"])))
        if draw(st.booleans()):
            del payload["model"][key]
        else:
            payload["model"][key] = torch.zeros(3, 5)
    else:
        key = draw(st.sampled_from(sorted(payload[part]) + ["extra"]))
        payload[part][key] = draw(values)
    return payload


def test_the_checkpoint_strategy_starts_from_a_usable_checkpoint(tmp_path):
    torch.save(_checkpoint(), tmp_path / "good.pt")
    code, output = _exit_code(["generate", "good.pt", "--max-new-tokens", "3", "--prompt", "ab"], tmp_path)
    assert code == 0, output


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=damaged_checkpoints())
def test_ablate_generate_on_a_damaged_checkpoint_samples_or_says_what_is_wrong(tmp_path_factory, payload):
    folder = tmp_path_factory.mktemp("checkpoint")
    torch.save(payload, folder / "damaged.pt")
    code, output = _exit_code(["generate", "damaged.pt", "--max-new-tokens", "3", "--prompt", "ab"], folder)
    assert code in (0, 2) and "Traceback" not in output, output[-2000:]
    if code == 2:
        assert output.startswith("ablate: error: ") and len(output.strip().splitlines()) == 1, output


@pytest.mark.parametrize("body", ["import sys\nsys.exit(7)\n", "import sys\nsys.exit()\n",
                                  "raise SystemExit('bye')\n", "1 / 0\n", "import no_such_module\n"])
def test_a_plugin_that_exits_or_raises_while_imported_is_named_in_one_message(tmp_path, body):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**VALID, "plugins": ["plugin.py"]}))
    (tmp_path / "plugin.py").write_text(body)
    code, output = _exit_code(["run", "study.yaml", "--dry-run"], tmp_path)
    assert code == 2 and "Traceback" not in output, output[-2000:]
    assert "plugin.py failed to import" in output, output
