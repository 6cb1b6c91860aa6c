"""The study schema: expansion into runs, overrides, profiles, and every way to get it wrong."""

import textwrap
from pathlib import Path

import pytest

from harness.config.study import load_study
from harness.errors import AblateError
from harness.study.matching import non_embedding_parameters
from harness.study.plan import expand

STUDIES = sorted(Path(__file__).parents[2].joinpath("studies").glob("*.yaml"))

VALID = """
name: s
base:
  model: {n_layer: 2, d_model: 32, n_head: 4, context_length: 32}
  train: {steps: 10, batch_size: 4}
grid:
  model.placement: [pre, post]
  model.norm: [layernorm, rmsnorm]
seeds: [3, 4]
"""


def _write(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_grid_expands_to_its_product_times_the_seeds_seed_major(tmp_path):
    runs = expand(load_study(_write(tmp_path, VALID)))
    assert len(runs) == 8
    assert [r.seed for r in runs] == [3] * 4 + [4] * 4
    assert runs[0].arm == "placement=pre,norm=layernorm"
    assert {(r.model.placement.name, r.model.norm.name) for r in runs[:4]} == {
        ("pre", "layernorm"), ("pre", "rmsnorm"), ("post", "layernorm"), ("post", "rmsnorm")}
    assert len({r.key() for r in runs}) == 8


def test_run_keys_are_stable_and_ignore_labels_device_and_kernels(tmp_path):
    first = expand(load_study(_write(tmp_path, VALID)))[0]
    relabelled = first.model_copy(update={"arm": "other", "study": "other"})
    elsewhere = first.model_copy(update={"train": first.train.model_copy(update={"device": "cuda", "tf32": False})})
    fused = first.model_copy(update={"model": first.model.model_copy(
        update={"attention_backend": "triton", "kernels": {"rmsnorm": "triton"}})})
    assert first.key() == relabelled.key() == elsewhere.key() == fused.key()
    assert first.key() != first.model_copy(update={"seed": 99}).key()


def test_set_overrides_and_profiles_apply_before_validation(tmp_path):
    path = _write(tmp_path, VALID + "profiles:\n  big: {base.model.n_layer: 4, base.train: {steps: 20}}\n")
    study = load_study(path, ["base.train.lr=1e-2", "seeds=1"], profile="big")
    run = expand(study)[0]
    assert (run.model.n_layer, run.train.steps, run.train.lr, study.seeds) == (4, 20, 0.01, [0])
    assert run.train.batch_size == 4  # a mapping for a section sets fields, it does not replace the section


def test_explicit_arms_set_fields_by_path_or_by_section(tmp_path):
    study = load_study(_write(tmp_path, """
        name: s
        base: {model: {n_layer: 2, d_model: 32, n_head: 4}}
        arms:
          - name: a
          - name: b
            set: {model: {norm: rmsnorm, mlp: swiglu}, train.lr: 0.01}
        report: {baseline: b}
    """))
    a, b = expand(study)
    assert (a.model.norm.name, b.model.norm.name, b.model.mlp.name, b.train.lr) == ("layernorm", "rmsnorm", "swiglu", 0.01)
    assert b.model.n_layer == 2 and study.baseline == "b"


def test_match_params_equalises_non_embedding_parameters_within_one_percent(tmp_path):
    study = load_study(_write(tmp_path, """
        name: s
        base: {model: {n_layer: 2, d_model: 64, n_head: 8}}
        grid: {model.attention: [mha, mqa, {name: gqa, n_kv_heads: 2}]}
        match: params
    """))
    counts = [non_embedding_parameters(run) for run in expand(study)]
    assert max(counts) - min(counts) <= 0.01 * counts[0]
    unmatched = [non_embedding_parameters(run) for run in expand(study.model_copy(update={"match": None}))]
    assert max(unmatched) - min(unmatched) > 0.05 * unmatched[0]


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_study_and_its_gpu_profile_validate(path):
    for profile in (None, "gpu"):
        study = load_study(path, profile=profile)
        runs = expand(study)
        scales = len(study.scale_list())
        assert len(runs) == len(study.arm_list()) * len(study.seeds) * scales and len(study.seeds) >= 3
        assert len({r.key() for r in runs}) == len(runs), "every arm differs from the others"


BAD_STUDIES = [
    ("name: s\n  oops: 1\n", "(line 2, column 7): not valid YAML"),
    ("- just\n- a list\n", "a study is a mapping"),
    ("base: {}\n", "name: Field required"),
    ("name: s\nseeds: three\n", "seeds"),
    ("name: s\nbase: {model: {n_layer: -1}}\n", "n_layer: Input should be greater than 0"),
    ("name: s\nbase: {model: {n_layers: 4}}\n", "n_layers: Extra inputs are not permitted"),
    ("name: s\nbase: {model: {nrom: rmsnorm}}\n", "nrom"),
    ("name: s\ngrid: {model.norm: [layernorm, rmsnrom]}\n", "did you mean 'rmsnorm'"),
    ("name: s\nbase: {model: {attention: {name: gqa, n_kv_heads: 3}}}\n", "must be divisible by n_kv_heads (3)"),
    ("name: s\nbase: {model: {d_model: 100, n_head: 3}}\n", "divisible by n_head"),
    ("name: s\ndata: {dataset: shakespear}\n", "unknown dataset variant 'shakespear'"),
    ("name: s\nplugins: [no_such_plugin_module]\n", "plugin module 'no_such_plugin_module' was not found"),
    ("name: s\nplugins: [missing_plugin.py]\n", "plugin file 'missing_plugin.py' does not exist"),
    ("name: s\nbase: {train: {steps: 0}}\n", "steps: Input should be greater than 0"),
    ("name: s\ngrid: {model.norm: []}\n", "grid.model.norm has no values"),
    ("name: s\ngrid: {optimizer.lr: [1, 2]}\n", "must start with model., train. or data."),
    ("name: s\nreport: {baseline: nope}\n", "report.baseline 'nope' is not an arm"),
    ("name: 's/../x'\n", "name"),
    # every profile is checked on the machine at hand, not only when chosen
    ("name: s\nprofiles: {gpu: {base.model.n_head: 7}}\n", "profile 'gpu': arm 'base': model: d_model (128) must"),
    ("name: s\nprofiles: {gpu: {base.model.n_heads: 12}}\n", "profile 'gpu': base.model.n_heads: Extra inputs"),
    ("name: s\nprofiles: {gpu: {data.tokenizer: {name: bep}}}\n", "profile 'gpu'"),
    # sizes refused before anything is built or planned
    ("name: s\nbase: {model: {n_layer: 900, d_model: 40960, n_head: 32}}\n", "parameters, more than 1e+12"),
    ("name: s\nbase: {model: {vocab_size: 1000000000000000000}}\n", "parameters, more than 1e+12"),
    ("name: s\nbase: {model: {n_layer: 1000000000}}\n", "n_layer: Input should be less than or equal to 1000"),
    ("name: s\nseeds: 1300000\n", "1,300,000 seeds is more runs than a study may plan"),
    ("name: s\nseeds: [0, 1]\ngrid: {model.n_layer: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], model.d_model: [16, 32, 48, 64, "
     "80, 96, 112, 128, 144, 160, 176], train.lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1], "
     "train.steps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], train.batch_size: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}\n",
     "the grid makes 161,051 arms"),
    ("name: s\nbase: {train: {batch_size: 1000000000}}\n", "tokens per micro-batch"),
    ("name: " + "s" * 101 + "\n", "name: String should have at most 100 characters"),
    # unknown names get the closest known one, nanoGPT's and Hugging Face's names their ablate name
    ("name: s\nbase: {train: {learning_rate: 0.001}}\n", "base.train.learning_rate: Extra inputs are not "
     "permitted (did you mean 'lr'?)"),
    ("name: s\nbase: {model: {n_embd: 64}}\n", "(did you mean 'd_model'?)"),
    ("name: s\nbase: {train: {stepz: 3}}\n", "(did you mean 'steps'?)"),
    ("name: s\nreport: {baselin: x}\n", "(did you mean 'baseline'?)"),
    ("name: s\ndata: {dataset: addition, digitz: 3}\n", "digitz: Extra inputs are not permitted (did you mean "
     "'digits'?)"),
    # a billion laughs: nine lines that stand for 10^9 values
    ("name: s\ngrid:\n  model.n_layer:\n    - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
     + "".join(f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)),
     "more than 100,000 values once its YAML aliases"),
]


@pytest.mark.parametrize("text,message", BAD_STUDIES)
def test_malformed_studies_fail_with_one_message_naming_the_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(AblateError) as err:
        expand(load_study(path), str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_a_missing_study_file_is_named(tmp_path):
    with pytest.raises(AblateError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")


def test_dataset_options_may_be_written_beside_the_dataset_name(tmp_path):
    """`data: {dataset: addition, digits: 2}` is `data: {dataset: {name: addition, digits: 2}}`: the same run."""
    flat = load_study(_write(tmp_path, "name: s\ndata: {dataset: addition, digits: 2, val_windows: 8}\n"))
    (tmp_path / "nested").mkdir()
    nested = load_study(_write(tmp_path / "nested", "name: s\ndata: {dataset: {name: addition, digits: 2}, "
                                                    "val_windows: 8}\n"))
    assert flat.data == nested.data and flat.data.dataset.options["digits"] == 2
    assert expand(flat, "flat")[0].key() == expand(nested, "nested")[0].key()
