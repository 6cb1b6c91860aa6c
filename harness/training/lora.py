"""Low-rank adapters (Hu et al. 2021, "LoRA") on a frozen GPT, through `peft`.

`peft` wraps any `nn.Linear` by module name, so it wraps our blocks as they are: the adapted
layers are every linear layer inside each block's attention and/or MLP (a fused qkv
projection gets one adapter, as GPT-2's c_attn does in `peft`). Everything else is frozen.
At the end of training the adapters are merged into the weights (W + alpha/r B A), so the
final checkpoint is a plain GPT that `ablate generate` and a later fine-tune load with no
adapter code.
"""

from __future__ import annotations

from torch import nn

from harness.config.train import LoraConfig
from harness.errors import AblateError
from harness.model.gpt import GPT

TARGET_MODULES = {"attention": "attention", "mlp": "mlp"}  # target -> the block's submodule it adapts


def adapted_layers(model: GPT, targets: list[str]) -> list[str]:
    """Names of the linear layers the targets cover, in every block."""
    wanted = {TARGET_MODULES[target] for target in targets}
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.startswith("blocks.") and name.split(".")[2] in wanted]
    if not names:
        raise AblateError(f"train.lora.targets {targets}: this model's blocks have no linear layer there")
    return names


def with_lora(model: GPT, cfg: LoraConfig):
    """Put adapters on `model` (in place) and freeze the rest; returns peft's handle on it."""
    try:
        import peft
    except ModuleNotFoundError as err:
        raise AblateError(f"train.lora needs the Python package '{err.name}': pip install 'ablate[hf]'") from None
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                             target_modules=adapted_layers(model, cfg.targets), bias="none")
    return peft.get_peft_model(model, config)


def merge_lora(adapters) -> GPT:
    """The model with its adapters merged into its weights: a plain GPT again."""
    return adapters.merge_and_unload()


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
