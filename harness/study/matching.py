"""Matched comparisons: give every arm the baseline's non-embedding parameter count.

The MLP hidden width is the knob (as when GQA's saved key/value parameters are given back
to the feed-forward layer): parameters are linear in it, so two probes find the width, and
the result is checked to be within 1%.
"""

from __future__ import annotations

import torch

from harness.config.run import RunSpec
from harness.errors import AblateError
from harness.model.gpt import GPT

TOLERANCE = 0.01


def non_embedding_parameters(spec: RunSpec) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost; the vocabulary does not count
        return GPT(spec.model.for_vocabulary(1)).num_parameters(non_embedding=True)


def _with_hidden(spec: RunSpec, hidden: int) -> RunSpec:
    mlp = spec.model.mlp
    model = spec.model.model_dump()
    model["mlp"] = {"name": mlp.name, **{**mlp.options, "hidden_dim": hidden}}
    return spec.model_copy(update={"model": type(spec.model)(**model)})


def match_parameters(arms: dict[str, RunSpec], baseline: str, where: str) -> dict[str, RunSpec]:
    target = non_embedding_parameters(arms[baseline])
    matched = {}
    for name, spec in arms.items():
        current = non_embedding_parameters(spec)
        if name == baseline or abs(current - target) <= TOLERANCE * target:
            matched[name] = spec
            continue
        if "hidden_dim" not in spec.model.mlp.options:
            raise AblateError(f"{where}: match: params adjusts the MLP width, but arm '{name}' uses mlp "
                              f"'{spec.model.mlp.name}', which has no hidden_dim option")
        low, high = _with_hidden(spec, 64), _with_hidden(spec, 128)
        per_unit = (non_embedding_parameters(high) - non_embedding_parameters(low)) / 64
        hidden = round(64 + (target - non_embedding_parameters(low)) / per_unit)
        if hidden < 1:
            raise AblateError(f"{where}: arm '{name}' has more parameters than the baseline even without an MLP; "
                              "match by hand or drop match: params")
        candidate = _with_hidden(spec, hidden)
        got = non_embedding_parameters(candidate)
        if abs(got - target) > TOLERANCE * target:
            raise AblateError(f"{where}: could not match arm '{name}' to {target:,} parameters (best {got:,})")
        matched[name] = candidate
    return matched
