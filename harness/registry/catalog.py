"""What is known: the registered variants, once the installed plugins (entry points) are
loaded. Lookups go through here so that a variant of an installed package is found by name
without the study listing it."""

from __future__ import annotations

from harness.errors import AblateError
from harness.registry.core import SLOTS, Variant, check_slot, registered, suggestion
from harness.registry.loading import load_installed


def lookup(slot: str, name: str) -> Variant:
    """The variant `name` of `slot`. Raises AblateError for an unknown slot, or an unknown name
    with the known names and the closest one."""
    check_slot(slot)
    load_installed()
    known = registered(slot)
    if name not in known:
        raise AblateError(
            f"unknown {slot} variant '{name}'{suggestion(name, known)}; "
            f"known {slot} variants: {', '.join(sorted(known)) or '(none)'}. A plugin's variant is known once "
            "its file or module is loaded: list it under the study's plugins: or pass --plugin FILE"
        )
    return known[name]


def variants(slot: str | None = None) -> list[Variant]:
    """Every registered variant (of one slot, or of all), slot order then name order. Raises
    AblateError for an unknown slot."""
    load_installed()
    slots = [slot] if slot else list(SLOTS)
    return [variant for s in slots for _, variant in sorted(registered(s).items())]
