"""The study schema: a YAML file that names the arms to compare, and its expansion into runs.

    name: norm_placement
    description: pre-norm against post-norm
    base:
      model: {n_layer: 8, d_model: 128, n_head: 4, context_length: 128}
      train: {steps: 400, batch_size: 16, lr: 3.0e-3}
    data: {dataset: pydoc, tokenizer: char}
    grid: {model.placement: [pre, post]}       # or arms: [{name: ..., set: {...}}, ...]
    seeds: [0, 1, 2]
    report: {metric: val_loss, baseline: pre, goal: minimize}

Everything a user can get wrong is found here, before any training, and reported as one
message naming the file, the field and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field

from harness.data import DataConfig
from harness.errors import AblateError, describe_validation_error
from harness.registry import MODEL_SLOTS, load_plugin
from harness.spec import RunSpec


class BaseSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(default_factory=dict, description="model fields and one variant per slot")
    train: dict[str, Any] = Field(default_factory=dict, description="training fields")


class Arm(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict, description="dotted paths (model.norm) -> values")


class ReportSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    metric: str = "val_loss"
    baseline: str | None = Field(None, description="arm the others are compared with; default the first")
    goal: Literal["minimize", "maximize"] = "minimize"


class SearchDimension(pydantic.BaseModel):
    """One tuned field: a float or int range (optionally log-scaled) or a list of choices."""

    model_config = pydantic.ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @pydantic.model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs choices")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} dimension needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled dimension needs low > 0")
        return self


class TuneSettings(pydantic.BaseModel):
    """Per-arm tuning with one budget for every arm, before the comparison over seeds."""

    model_config = pydantic.ConfigDict(extra="forbid")

    space: dict[str, SearchDimension] = Field(min_length=1, description="run field path -> range or choices")
    trials: int = Field(8, gt=0, description="trials per arm (pruned ones count)")
    timeout_s: float | None = Field(None, gt=0, description="time budget per arm, on top of trials")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = Field(0, description="training seed of the tuning trials (and the sampler's seed)")

    @pydantic.model_validator(mode="after")
    def _paths_and_grid(self):
        for path in self.space:
            if path.split(".")[0] not in ("model", "train", "data"):
                raise ValueError(f"tune.space.{path} must start with model., train. or data.")
        if self.sampler == "grid" and any(d.type != "categorical" for d in self.space.values()):
            raise ValueError("the grid sampler needs categorical dimensions only")
        return self


class StudySpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="letters, digits, _ . -")
    description: str = ""
    base: BaseSettings = BaseSettings()
    data: DataConfig = DataConfig()
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="path -> values; arms are their product")
    arms: list[Arm] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    plugins: list[str] = Field(default_factory=list)
    match: Literal["params"] | None = Field(None, description="params: equal non-embedding parameters per arm")
    report: ReportSettings = ReportSettings()
    tune: TuneSettings | None = None
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named sets of overrides (path: value), chosen with --profile")

    @pydantic.field_validator("seeds", mode="before")
    @classmethod
    def _count_or_list(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("seeds must be a positive count or a list of seeds")
            return list(range(value))
        return value

    @pydantic.model_validator(mode="after")
    def _arms_well_formed(self):
        if self.grid and self.arms:
            raise ValueError("give either grid or arms, not both")
        for path, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{path} has no values")
        names = [arm.name for arm in self.arm_list()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must not repeat")
        if self.report.baseline is not None and self.report.baseline not in names:
            raise ValueError(f"report.baseline '{self.report.baseline}' is not an arm; arms: {', '.join(names)}")
        return self

    def arm_list(self) -> list[Arm]:
        if self.arms:
            return self.arms
        if not self.grid:
            return [Arm(name="base")]
        paths = list(self.grid)
        arms = []
        for values in itertools.product(*(self.grid[p] for p in paths)):
            labels = [_label(v) for v in values]
            name = labels[0] if len(paths) == 1 else ",".join(f"{_short(p)}={l}" for p, l in zip(paths, labels))
            arms.append(Arm(name=name, set=dict(zip(paths, values))))
        return arms

    @property
    def baseline(self) -> str:
        return self.report.baseline or self.arm_list()[0].name


def _label(value) -> str:
    if isinstance(value, dict) and "name" in value:
        extra = {k: v for k, v in value.items() if k != "name"}
        return value["name"] + ("(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
    return str(value)


def _short(path: str) -> str:
    return path.split(".")[-1]


def _assign(tree: dict, parts: list[str], value: Any, containers: set[tuple[str, ...]], where: str) -> None:
    """tree[a][b] = value for parts [a, b]. A mapping given for a container (a section such as
    `model`) sets each of its fields; for anything else (a slot, an option) it replaces."""
    if isinstance(value, dict) and tuple(parts) in containers:
        for key, inner in value.items():
            _assign(tree, [*parts, str(key)], inner, containers, where)
        return
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AblateError(f"{where}: '{'.'.join(parts)}' goes through '{part}', which is not a mapping")
        node = child
    node[parts[-1]] = value


RUN_SECTIONS = {("model",), ("train",), ("data",)}
STUDY_CONTAINERS = {("base",), ("base", "model"), ("base", "train"), ("data",), ("report",), ("grid",), ("tune",)}


def _set_path(tree: dict, path: str, value: Any, where: str) -> None:
    """Set a run field by path; a bare slot name means model.<slot>."""
    parts = path.split(".")
    if len(parts) == 1 and parts[0] in MODEL_SLOTS:
        parts = ["model", parts[0]]
    if parts[0] not in ("model", "train", "data"):
        raise AblateError(f"{where}: '{path}' must start with model., train. or data.")
    _assign(tree, parts, value, RUN_SECTIONS, where)


def arm_spec(study: StudySpec, arm: Arm, where: str = "study", extra: dict[str, Any] | None = None) -> RunSpec:
    """The run of `arm` (seed 0), with `extra` path -> value settings on top (tuned values)."""
    tree = {"model": copy.deepcopy(study.base.model), "train": copy.deepcopy(study.base.train),
            "data": study.data.model_dump(mode="json")}
    for path, value in {**arm.set, **(extra or {})}.items():
        _set_path(tree, path, copy.deepcopy(value), f"{where}: arm '{arm.name}'")
    try:
        return RunSpec(study=study.name, arm=arm.name, **tree)
    except pydantic.ValidationError as err:
        raise AblateError(describe_validation_error(err, f"{where}: arm '{arm.name}'")) from None
    except AblateError as err:
        raise AblateError(f"{where}: arm '{arm.name}': {err}") from None


def expand(study: StudySpec, where: str = "study", tuned: dict[str, dict[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of the study, seed-major, so that a partial study already compares all arms.
    `tuned` gives each arm's best tuned settings (path -> value)."""
    per_arm = {arm.name: arm_spec(study, arm, where, (tuned or {}).get(arm.name)) for arm in study.arm_list()}
    if study.match == "params":
        from harness.matching import match_parameters

        per_arm = match_parameters(per_arm, study.baseline, where)
    return [spec.model_copy(update={"seed": seed}) for seed in study.seeds for spec in per_arm.values()]


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001): the value is read as YAML."""
    if "=" not in text:
        raise AblateError(f"--set '{text}': expected path=value, e.g. train.steps=200")
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


def load_study(path: str | Path, overrides: list[str] | None = None, profile: str | None = None) -> StudySpec:
    """Read, apply a profile and overrides, load plugins and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise AblateError(f"study file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise AblateError(f"{path}{place}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise AblateError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise AblateError(f"{path}: a study is a mapping with at least 'name'; got {type(raw).__name__}")
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise AblateError(f"{path}: no profile '{profile}'; profiles: {', '.join(profiles) or '(none)'}")
        if not isinstance(profiles[profile], dict):
            raise AblateError(f"{path}: profiles.{profile} must map paths to values")
        for key, value in profiles[profile].items():
            _set_override(raw, str(key), value, path)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_override(raw, key, value, path)
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise AblateError(f"{path}: plugins must be a list of module names or .py files")
    for plugin in plugins:
        try:
            load_plugin(plugin, base_dir=path.parent)
        except AblateError as err:
            raise AblateError(f"{path}: plugins: {err}") from None
    try:
        return StudySpec(**raw)
    except pydantic.ValidationError as err:
        raise AblateError(describe_validation_error(err, str(path))) from None
    except AblateError as err:
        raise AblateError(f"{path}: {err}") from None
    except TypeError as err:  # keys that are not strings
        raise AblateError(f"{path}: {err}") from None


def _set_override(raw: dict, key: str, value: Any, path: Path) -> None:
    if key.startswith("grid."):  # grid keys are paths themselves: grid.model.norm is grid["model.norm"]
        grid = raw.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise AblateError(f"{path}: grid must map paths to lists of values")
        grid[key.removeprefix("grid.")] = value
        return
    _assign(raw, key.split("."), value, STUDY_CONTAINERS, f"{path}: override {key}")
