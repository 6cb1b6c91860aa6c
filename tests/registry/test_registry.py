"""The registry: registration, lookup, options."""

import pytest
from pydantic import Field

from harness.config.model import ModelConfig
from harness.errors import AblateError
from harness.registry import MODEL_SLOTS, SLOTS, Options, lookup, register, variants

BUILT_IN = {
    "norm": {"layernorm", "rmsnorm"},
    "placement": {"pre", "post"},
    "attention": {"mha", "mqa", "gqa"},
    "mlp": {"gelu", "swiglu", "relu", "geglu"},
    "position": {"learned", "rope", "sinusoidal", "alibi", "none"},
    "init": {"normal", "gpt2", "layer_scaled"},
    "dropout": {"constant", "depth_scaled"},
}


def test_every_built_in_variant_arrives_through_the_entry_points():
    for slot, names in BUILT_IN.items():
        found = {v.name: v for v in variants(slot)}
        assert names <= set(found), f"{slot} lacks {names - set(found)}"
        assert all(found[name].source.endswith("(package ablate)") for name in names)


def test_every_variant_has_a_docstring_and_defaults_that_validate_or_say_what_to_give():
    for variant in variants():
        assert variant.summary, f"{variant.slot}/{variant.name} has no docstring"
        try:
            variant.parse_options({})
        except ValueError as err:  # e.g. gqa needs n_kv_heads, url needs url or preset
            assert str(err).startswith(f"{variant.slot} '{variant.name}': ")


def test_unknown_slot_names_the_slots():
    with pytest.raises(AblateError, match=r"unknown slot 'nrom' \(did you mean 'norm'\?\); slots: norm, placement"):
        lookup("nrom", "rmsnorm")


def test_unknown_variant_names_the_known_ones_and_the_closest():
    with pytest.raises(AblateError) as err:
        lookup("norm", "rmsnrom")
    assert "did you mean 'rmsnorm'" in str(err.value)
    assert "known norm variants: layernorm, rmsnorm" in str(err.value)


def test_options_are_validated_with_their_types_and_bounds():
    with pytest.raises(ValueError, match="norm 'rmsnorm': eps"):
        ModelConfig(norm={"name": "rmsnorm", "eps": -1})
    with pytest.raises(ValueError, match="hidden_ratio"):
        ModelConfig(mlp={"name": "gelu", "hidden_ratio": "wide"})


def test_a_validated_config_holds_every_default_option():
    cfg = ModelConfig(mlp="swiglu")
    assert cfg.mlp.options == {"hidden_ratio": 4.0, "hidden_dim": None, "multiple_of": 1}
    assert cfg == ModelConfig(mlp={"name": "swiglu", "multiple_of": 1})


def test_decorator_registration_and_duplicate_names_from_elsewhere_are_refused():
    class Wide(Options):
        factor: int = Field(2, gt=0)

    @register("norm", "test_identity", Wide)
    def identity(cfg, options, dim):
        """Identity norm, for this test."""
        import torch

        return torch.nn.Identity()

    assert lookup("norm", "test_identity").options is Wide
    ModelConfig(norm={"name": "test_identity", "factor": 3})

    with pytest.raises(AblateError, match="registered twice"):
        @register("norm", "test_identity")
        def other(cfg, options, dim):
            """Another."""


def test_register_refuses_unknown_slots():
    with pytest.raises(AblateError, match="unknown slot"):
        register("activation", "x")


def test_a_model_chooses_one_variant_for_each_of_the_seven_block_slots():
    assert MODEL_SLOTS == ("norm", "placement", "attention", "mlp", "position", "init", "dropout")
    assert set(MODEL_SLOTS) < set(SLOTS)


def test_variants_import_nothing_of_harness_but_the_registry():
    """The built-ins are written like plugins: the registry's public API is all they see."""
    import ast
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].joinpath("variants").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith("harness") or name == "harness.registry", f"{path.name} imports {name}"
