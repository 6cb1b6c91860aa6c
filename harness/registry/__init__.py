"""The public API of the registry: everything a variant or a plugin may import from ablate.

    from harness.registry import register, Options

    class SquaredReLUOptions(Options):
        hidden_ratio: float = 4.0

    @register("mlp", "relu2", SquaredReLUOptions)
    class SquaredReLU(nn.Module):
        def __init__(self, cfg, options, layer): ...
"""

# fusable ops (RMSNorm, SwiGLU) whose Triton kernel a variant offers when cfg.kernels asks for it
from harness.kernels import fused_op
from harness.registry.contracts import (
    AttentionBackend,
    DropoutSchedule,
    Initializer,
    InitTarget,
    LayerInfo,
    PositionEncoding,
    TaskDataset,
    TextDocuments,
    TextFiles,
    TextSource,
    mark_residual_output,
    writes_residual,
)
from harness.registry.catalog import lookup, variants
from harness.registry.core import BUILT_IN_PACKAGE, MODEL_SLOTS, SLOTS, NoOptions, Options, Variant, register
from harness.registry.loading import ENTRY_POINT_GROUP, load_installed, load_plugin

__all__ = [
    "AttentionBackend",
    "BUILT_IN_PACKAGE",
    "MODEL_SLOTS",
    "SLOTS",
    "ENTRY_POINT_GROUP",
    "DropoutSchedule",
    "Initializer",
    "InitTarget",
    "LayerInfo",
    "NoOptions",
    "Options",
    "PositionEncoding",
    "TaskDataset",
    "TextDocuments",
    "TextFiles",
    "TextSource",
    "Variant",
    "fused_op",
    "load_installed",
    "load_plugin",
    "lookup",
    "mark_residual_output",
    "register",
    "variants",
    "writes_residual",
]
