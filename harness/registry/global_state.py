"""The process-wide state of PyTorch that decides a run's numbers, and the rule that keeps
plugins from changing it behind the run key.

A run key covers a run's configuration, data, tokenizer and plugin code, not the state of the
process it trains in. A plugin whose import called `torch.set_default_dtype(torch.float64)`
would make every run of the study train in float64 under the keys of float32 runs, and a
report would pool both. So the rule is: **importing a plugin must leave PyTorch's global state
as it found it**. A :class:`Snapshot` is taken before and after each plugin import; a change is
refused, naming the plugin and what it changed, and undone, so the process goes on as it was.
A plugin that needs such a setting makes it a variant option or a training setting instead,
where it enters the key. The same holds while a run's model is built from its variants.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

RANDOM_STATE = "the global random state (torch.manual_seed)"


def _backend(module, name: str):
    return lambda value: setattr(module, name, value)


# what a switch is called, how to read it, how to set it back
_SWITCHES: list[tuple[str, Callable[[], object], Callable[[object], None]]] = [
    ("the default dtype (torch.set_default_dtype)", torch.get_default_dtype, torch.set_default_dtype),
    ("the default device (torch.set_default_device)", torch.get_default_device, torch.set_default_device),
    ("deterministic algorithms (torch.use_deterministic_algorithms)", torch.are_deterministic_algorithms_enabled,
     torch.use_deterministic_algorithms),
    ("the float32 matmul precision (torch.set_float32_matmul_precision)", torch.get_float32_matmul_precision,
     torch.set_float32_matmul_precision),
    ("TF32 matmuls (torch.backends.cuda.matmul.allow_tf32)", lambda: torch.backends.cuda.matmul.allow_tf32,
     _backend(torch.backends.cuda.matmul, "allow_tf32")),
    ("reduced-precision fp16 reductions (torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction)",
     lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
     _backend(torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction")),
    ("reduced-precision bf16 reductions (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)",
     lambda: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
     _backend(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction")),
    ("cuDNN (torch.backends.cudnn.enabled)", lambda: torch.backends.cudnn.enabled,
     _backend(torch.backends.cudnn, "enabled")),
    ("cuDNN TF32 (torch.backends.cudnn.allow_tf32)", lambda: torch.backends.cudnn.allow_tf32,
     _backend(torch.backends.cudnn, "allow_tf32")),
    ("cuDNN determinism (torch.backends.cudnn.deterministic)", lambda: torch.backends.cudnn.deterministic,
     _backend(torch.backends.cudnn, "deterministic")),
    ("cuDNN autotuning (torch.backends.cudnn.benchmark)", lambda: torch.backends.cudnn.benchmark,
     _backend(torch.backends.cudnn, "benchmark")),
    ("oneDNN (torch.backends.mkldnn.enabled)", lambda: torch.backends.mkldnn.enabled,
     _backend(torch.backends.mkldnn, "enabled")),
    ("gradient mode (torch.set_grad_enabled)", torch.is_grad_enabled, torch.set_grad_enabled),
    ("anomaly detection (torch.autograd.set_detect_anomaly)", torch.is_anomaly_enabled,
     torch.autograd.set_detect_anomaly),
]

# namespaces whose functions a plugin could replace (monkey-patch) to change the math
_PATCHABLE: dict[str, object] = {"torch": torch, "torch.nn.functional": torch.nn.functional,
                                 "torch.Tensor": torch.Tensor, "torch.nn.init": torch.nn.init,
                                 "torch.linalg": torch.linalg, "torch.special": torch.special}


@dataclass
class _Function:
    owner: object  # the module or class it is looked up on
    name: str
    value: object
    own: bool  # in the owner's own namespace (not inherited by a class)


def _functions() -> dict[str, _Function]:
    """Every function and class of the patchable namespaces (a class's own and inherited
    attributes), and the `forward` of every module class of torch.nn. Names added later by a
    lazy import change nothing that ran before, so only names present now are compared."""
    found = {}
    for prefix, namespace in _PATCHABLE.items():
        own = vars(namespace)
        attributes = dict(own)
        if inspect.isclass(namespace):
            attributes = {}
            for klass in reversed(namespace.__mro__):
                attributes.update(vars(klass))
        for name, value in attributes.items():
            if callable(value) and not name.startswith("__"):
                found[f"{prefix}.{name}"] = _Function(namespace, name, value, name in own)
    for name, module in vars(torch.nn).items():
        if inspect.isclass(module) and issubclass(module, torch.nn.Module) and "forward" in vars(module):
            found[f"torch.nn.{name}.forward"] = _Function(module, "forward", vars(module)["forward"], True)
    return found


# aliases PyTorch re-points itself when a switch changes (torch.Storage follows the default dtype)
_DERIVED = {"torch.Storage"}


def _same_function(a: object, b: object) -> bool:
    # a function PyTorch wraps itself later (torch._dynamo wraps torch.manual_seed) is known by what it wraps
    return inspect.unwrap(a) is inspect.unwrap(b)


class Snapshot:
    """PyTorch's process-wide state that decides numbers, as it is now."""

    def __init__(self):
        self.switches = {name: read() for name, read, _ in _SWITCHES}
        self.random_state = torch.random.get_rng_state()
        self.functions = _functions()

    def changes(self, ignore: tuple[str, ...] = ()) -> list[str]:
        """What differs now from this snapshot (but the parts in `ignore`), as a person would say it."""
        now = Snapshot()
        said = [f"{name}: {before} -> {now.switches[name]}" for name, before in self.switches.items()
                if name not in ignore and now.switches[name] != before]
        if RANDOM_STATE not in ignore and not torch.equal(now.random_state, self.random_state):
            said.append(f"{RANDOM_STATE}: reseeded or drawn from")
        replaced = self._replaced(now)
        if replaced:
            more = f" and {len(replaced) - 5} more" if len(replaced) > 5 else ""
            said.append(f"replaced {', '.join(replaced[:5])}{more}")
        return said

    def _replaced(self, now: "Snapshot") -> list[str]:
        return sorted(name for name, before in self.functions.items() if name in now.functions
                      and name not in _DERIVED and not _same_function(now.functions[name].value, before.value))

    def restore(self) -> None:
        """Set back every switch, the random state and every replaced function."""
        for name, read, write in _SWITCHES:
            if read() != self.switches[name]:
                write(self.switches[name])
        torch.random.set_rng_state(self.random_state)
        for name in self._replaced(Snapshot()):
            before = self.functions[name]
            if before.own:
                setattr(before.owner, before.name, before.value)
            else:  # a class's inherited function, shadowed in the class itself
                delattr(before.owner, before.name)
