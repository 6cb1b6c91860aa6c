"""Dispatching attention calls to a backend (harness/model/backends.py and plugins'),
falling back along a chain when the chosen one cannot serve a call, and remembering what ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.registry import AttentionBackend, NoOptions, lookup, variants

SLOT = "attention_backend"


def backend(name: str) -> AttentionBackend:
    """The registered attention backend `name`."""
    return lookup(SLOT, name).factory(None, NoOptions())


def backend_names() -> list[str]:
    """What `model.attention_backend` accepts: auto, then every registered backend."""
    return ["auto", *(variant.name for variant in variants(SLOT))]


def auto_chain() -> list[str]:
    """The backends `auto` tries, in order."""
    ranked = [(v.factory.auto_rank, v.name) for v in variants(SLOT) if getattr(v.factory, "auto_rank", None) is not None]
    return [name for _, name in sorted(ranked)]


@dataclass
class AttentionKernel:
    """Dispatches attention calls to the requested backend, falling back along a chain.

    The decision is made once per kind of call (device, dtype, bias or not, dropout or not) and
    recorded: `used` names the backends that ran, `fallbacks` why others were passed over.
    """

    requested: str = "auto"
    used: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    _decisions: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.requested != "auto":
            lookup(SLOT, self.requested)  # an unknown name fails here, with the known ones

    def chain(self) -> list[str]:
        if self.requested == "auto":
            return auto_chain()
        # an explicit choice that cannot serve a call falls back to the reference kernels
        return [self.requested] + [name for name in ("sdpa", "math") if name != self.requested]

    def __call__(self, q, k, v, *, bias=None, causal=True, dropout_p=0.0, scale=None):
        key = (q.device.type, q.dtype, bias is None, dropout_p > 0.0)
        chosen = self._decisions.get(key)
        if chosen is None:
            chosen = self._decisions[key] = self._decide(q, bias, dropout_p)
        if scale is None:
            scale = 1.0 / math.sqrt(q.size(-1))
        return chosen(q, k, v, bias=bias, causal=causal, dropout_p=dropout_p, scale=scale)

    def _decide(self, q, bias, dropout_p) -> AttentionBackend:
        for name in self.chain():
            candidate = backend(name)
            reason = candidate.unavailable(q, bias, dropout_p)
            if reason is None:
                if name not in self.used:
                    self.used.append(name)
                return candidate
            note = f"{name}: {reason}"
            if note not in self.fallbacks:
                self.fallbacks.append(note)
        raise RuntimeError("no attention backend can serve this call")  # math always can

    def report(self) -> dict[str, str]:
        """What to record on a run: requested backend, backends that ran, fallbacks taken."""
        return {
            "attention_backend_requested": self.requested,
            "attention_backend": ",".join(self.used) or "(not run yet)",
            "attention_backend_fallbacks": "; ".join(self.fallbacks),
        }
