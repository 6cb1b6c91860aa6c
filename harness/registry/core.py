"""Where variants live: one table per slot, filled by decorators at import time."""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pydantic

from harness.errors import AblateError, describe_validation_error
from harness.names import VARIANT_NAME
from harness.settings import Settings

SLOTS: dict[str, str] = {
    "norm": "normalisation layer (built with the width it normalises)",
    "placement": "residual wiring of attention, MLP and norms inside a block",
    "attention": "attention projections (query/key/value heads)",
    "mlp": "feed-forward sub-layer",
    "position": "position information: input embedding, q/k rotation or attention bias",
    "init": "weight initialisation of the whole model",
    "dropout": "dropout rate of each layer",
    "dataset": "training data: a text corpus or a synthetic task",
    "attention_backend": "attention kernel: a runtime choice, same numbers (not part of a run's identity)",
}
#: the slots a model configuration chooses a variant for
MODEL_SLOTS: tuple[str, ...] = ("norm", "placement", "attention", "mlp", "position", "init", "dropout")


class Options(Settings):
    """Base of every variant's options: unknown keys are refused, values are checked.

    Override :meth:`check_model` for constraints that involve the model's shape
    (e.g. heads divisible by key/value heads).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    def check_model(self, model: Any) -> None:
        """Raise ValueError when these options cannot work with the model configuration."""


class NoOptions(Options):
    """A variant without options."""


@dataclass(frozen=True)
class Variant:
    slot: str
    name: str
    factory: Callable[..., Any]
    options: type[Options]
    source: str  # where it came from, for people
    package: str | None = None  # the installed distribution that registered it, if any

    # the file that defines a plugin variant, as it was when the variant was registered
    # (ablate's own variants are covered by the ablate version recorded on every run)
    source_text: str = ""

    @property
    def defaults(self) -> str:
        """Its options with their defaults, as `name=default, ...` ("required" where none)."""
        return ", ".join(f"{name}={'required' if field.is_required() else field.default}"
                         for name, field in self.options.model_fields.items())

    @property
    def source_file(self) -> Path | None:
        """The file that defines the variant's code."""
        return _source_file(self.factory)

    @property
    def code(self) -> str:
        """What identifies a plugin variant's code in a run's identity: its package's name and
        version when installed, and the hash of its file; empty for ablate's own variants."""
        if self.package == BUILT_IN_PACKAGE:
            return ""
        parts = [f"{self.package}=={importlib.metadata.version(self.package)}"] if self.package else []
        if self.source_text:
            parts.append("sha256:" + hashlib.sha256(self.source_text.encode()).hexdigest()[:16])
        return " ".join(parts)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.split("\n\n")[0].replace("\n", " ")

    def parse_options(self, raw: dict[str, Any]) -> Options:
        try:
            return self.options(**raw)
        except pydantic.ValidationError as err:
            raise ValueError(describe_validation_error(err, f"{self.slot} '{self.name}'", self.options)) from None


BUILT_IN_PACKAGE = "ablate"


@dataclass(frozen=True)
class Origin:
    """Where the registrations of an import come from (see harness.registry.loading)."""

    label: str
    name_module: bool = False  # put the registering module's name first in `source`
    package: str | None = None


_VARIANTS: dict[str, dict[str, Variant]] = {slot: {} for slot in SLOTS}
_origins: list[Origin] = []  # the imports in progress, innermost last


def register(slot: str, name: str, options: type[Options] = NoOptions):
    """Class or function decorator that adds a variant to a slot.

    The decorated factory is called with ``(model_config, options, **slot_arguments)``;
    what it must return is described per slot in :mod:`harness.registry.contracts`.
    """
    check_slot(slot)
    if not (isinstance(name, str) and VARIANT_NAME.match(name)):
        raise AblateError(f"{slot} variant name {name!r} is not a name: use letters, digits and _ . + - (at most 100), "
                          "starting with a letter or digit; it is written in YAML, on command lines and in MLflow paths")
    if not (isinstance(options, type) and issubclass(options, Options)):
        raise TypeError(f"options of {slot}/{name} must subclass harness.registry.Options")

    def add(factory):
        source, package = factory.__module__, None
        if _origins:
            origin = _origins[-1]
            source = f"{factory.__module__} ({origin.label})" if origin.name_module else origin.label
            package = origin.package
        existing = _VARIANTS[slot].get(name)
        if existing is not None and _qualname(existing.factory) != _qualname(factory):
            raise AblateError(
                f"{slot} variant '{name}' is registered twice: by {existing.source} "
                f"and by {source}; rename one of them"
            )
        text = "" if package == BUILT_IN_PACKAGE else _source_text(factory)
        _VARIANTS[slot][name] = Variant(slot, name, factory, options, source, package, text)
        return factory

    return add


def _source_file(factory) -> Path | None:
    try:
        found = inspect.getsourcefile(factory)
    except TypeError:  # built into Python
        return None
    return Path(found) if found else None


def _source_text(factory) -> str:
    path = _source_file(factory)
    try:
        return path.read_text(encoding="utf-8") if path is not None else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _qualname(factory) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def check_slot(slot: str) -> None:
    if slot not in SLOTS:
        raise AblateError(f"unknown slot '{slot}'{suggestion(slot, SLOTS)}; slots: {', '.join(SLOTS)}")


def registered(slot: str) -> dict[str, Variant]:
    """The variants registered so far in `slot`, by name (harness.registry.catalog loads the
    installed plugins first)."""
    check_slot(slot)
    return _VARIANTS[slot]


def suggestion(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
