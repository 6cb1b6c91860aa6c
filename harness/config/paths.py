"""Dotted paths into nested settings: `model.norm`, `train.lr`, `base.model.n_layer`.

Arms (`set:`), grids, tuned values, profiles and `--set` all name fields this way. A mapping
given for a container (a section such as `model`) sets each of its fields; for anything
else (a slot, an option) it replaces the value.
"""

from __future__ import annotations

from typing import Any

import yaml

from harness.errors import AblateError
from harness.registry import MODEL_SLOTS

RUN_SECTIONS = {("model",), ("train",), ("data",)}
STUDY_CONTAINERS = {("base",), ("base", "model"), ("base", "train"), ("data",), ("eval",), ("report",), ("grid",),
                    ("tune",)}


def assign(tree: dict, parts: list[str], value: Any, containers: set[tuple[str, ...]], where: str) -> None:
    """tree[a][b] = value for parts [a, b], creating the mappings on the way."""
    if isinstance(value, dict) and tuple(parts) in containers:
        for key, inner in value.items():
            assign(tree, [*parts, str(key)], inner, containers, where)
        return
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AblateError(f"{where}: '{'.'.join(parts)}' goes through '{part}', which is not a mapping")
        node = child
    node[parts[-1]] = value


def set_run_field(tree: dict, path: str, value: Any, where: str) -> None:
    """Set a run field (model., train., data.) by path; a bare slot name means model.<slot>."""
    parts = path.split(".")
    if len(parts) == 1 and parts[0] in MODEL_SLOTS:
        parts = ["model", parts[0]]
    if parts[0] not in ("model", "train", "data"):
        raise AblateError(f"{where}: '{path}' must start with model., train. or data.")
    assign(tree, parts, value, RUN_SECTIONS, where)


def set_study_field(raw: dict, path: str, value: Any, where: str) -> None:
    """Set a field of a raw study (a profile's or `--set`'s override) by path."""
    if path.startswith("grid."):  # grid keys are paths themselves: grid.model.norm is grid["model.norm"]
        grid = raw.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise AblateError(f"{where}: grid must map paths to lists of values")
        grid[path.removeprefix("grid.")] = value
        return
    assign(raw, path.split("."), value, STUDY_CONTAINERS, f"{where}: override {path}")


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001): the value is read as YAML."""
    if "=" not in text:
        raise AblateError(f"--set {text}: expected path=value, e.g. base.train.steps=200")
    path, raw = text.split("=", 1)
    if not all(path.strip().split(".")):
        raise AblateError(f"--set {text}: '{path}' is not a setting's path; expected path=value, e.g. "
                          "base.train.steps=200")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value
