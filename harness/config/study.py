"""The study file: a YAML mapping that names the arms to compare, validated before anything runs.

    name: norm_placement
    description: pre-norm against post-norm
    base:
      model: {n_layer: 8, d_model: 128, n_head: 4, context_length: 128}
      train: {steps: 400, batch_size: 16, lr: 3.0e-3}
    data: {dataset: pydoc, tokenizer: char}
    grid: {model.placement: [pre, post]}       # or arms: [{name: ..., set: {...}}, ...]
    seeds: [0, 1, 2]
    report: {metric: val_loss, baseline: pre, goal: minimize}
    scales: {base.model.d_model: [64, 128, 256]}   # optional: every arm at every scale

Everything a user can get wrong is found here or in the plan (harness.study.plan), before
any training, and reported as one message naming the file, the field and what is allowed.
`ablate schema` prints this schema as JSON Schema, for editors.
"""

from __future__ import annotations

import collections
import copy
import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import yaml
from pydantic import Field

from harness.config.data import DataConfig
from harness.config.eval import EvalConfig
from harness.config.model import ModelConfig, VariantChoice
from harness.config.paths import parse_override, set_run_field, set_study_field
from harness.config.run import MAX_SEED, RunSpec, Seed
from harness.config.train import TrainConfig
from harness.errors import AblateError, describe_validation_error
from harness.names import ShowableName, ShowableText
from harness.registry import load_plugin
from harness.settings import Settings

SPEED_METRICS = {"tokens_per_s", "avg_tokens_per_s", "wall_time_s", "step_time_ms", "mfu"}
MOST_RUNS = 100_000  # arms x seeds x scales a study may plan


def _partial(model: type[pydantic.BaseModel], name: str, doc: str) -> type[pydantic.BaseModel]:
    """`model`'s fields, each optional and unset unless the study sets it: what every arm of
    a study starts from. The whole run is validated once each arm's settings are on top."""
    fields = {}
    for field_name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        if info.annotation is VariantChoice:  # a slot, kept as written (a name or {name: ..., options})
            annotation = Union[str, dict[str, Any]]
        fields[field_name] = (Optional[annotation], Field(None, description=info.description,
                                                          json_schema_extra=info.json_schema_extra))
    return pydantic.create_model(name, __doc__=doc, __base__=_PartialSettings, **fields)


class _PartialSettings(Settings):
    model_config = pydantic.ConfigDict(extra="forbid")


ModelSettings = _partial(ModelConfig, "ModelSettings", "Model fields and one variant per slot, shared by every arm.")
TrainSettings = _partial(TrainConfig, "TrainSettings", "Training fields shared by every arm.")


class BaseSettings(Settings):
    """What every arm shares; an arm's `set` goes on top."""

    model_config = pydantic.ConfigDict(extra="forbid")

    model: ModelSettings = Field(default_factory=ModelSettings, description="model fields and one variant per slot")
    train: TrainSettings = Field(default_factory=TrainSettings, description="training fields")

    def run_tree(self) -> dict[str, dict]:
        """The fields this study sets, as nested mappings (model and train)."""
        return {"model": self.model.model_dump(exclude_unset=True), "train": self.train.model_dump(exclude_unset=True)}


class Arm(Settings):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: ShowableName
    set: dict[str, Any] = Field(default_factory=dict, description="dotted paths (model.norm) -> values")
    seeds: list[Seed] | None = Field(None, min_length=1, description="this arm's own seeds (an A/A control's copy); "
                                                                     "default the study's")


# the scale paths that change the tokens a run trains on
TOKEN_PATHS = ("base.train.steps", "base.train.batch_size", "base.train.grad_accum", "base.model.context_length")


class ForecastSettings(Settings):
    """Where a study with `scales:` forecasts its verdicts (harness.report.forecast): each arm's
    final metric fitted against `axis`, and each difference forecast `at` a scale setting
    (the paths of `scales:`) or at a `compute` budget."""

    model_config = pydantic.ConfigDict(extra="forbid")

    axis: Literal["compute", "params", "tokens"] = Field(
        "compute", description="what the metric is fitted against: training FLOPs, non-embedding parameters or "
                               "training tokens")
    at: dict[str, Any] | None = Field(None, description="the target as scale settings, e.g. {base.model.d_model: 768}")
    compute: float | None = Field(None, gt=0, allow_inf_nan=False,
                                  description="the target as training FLOPs per run (axis: compute)")

    @pydantic.model_validator(mode="after")
    def _one_target(self):
        if self.at is not None and self.compute is not None:
            raise ValueError("give the target as `at` or as `compute`, not both")
        if self.compute is not None and self.axis != "compute":
            raise ValueError("compute is a budget of training FLOPs; it needs axis: compute")
        return self

    def target_label(self) -> str:
        if self.at:
            return ",".join(f"{_short(path)}={_label(value)}" for path, value in self.at.items())
        return f"{self.compute:.3g} FLOPs" if self.compute else ""


class ReportSettings(Settings):
    model_config = pydantic.ConfigDict(extra="forbid")

    metric: str = Field("val_loss", description="val_loss, val_bpb, train_loss, val_exact_match, or a task's "
                                                "metric (hellaswag/acc_norm)")
    baseline: str | None = Field(None, description="arm the others are compared with; default the first")

    @pydantic.field_validator("metric")
    @classmethod
    def _not_a_speed(cls, metric: str) -> str:
        if metric in SPEED_METRICS:
            raise ValueError(f"'{metric}' measures the machine as much as the variant (a busy machine, a resumed "
                             "run), so it is never a verdict; compare speed with `ablate bench`")
        return metric
    goal: Literal["minimize", "maximize"] | None = Field(
        None, description="default: minimize a loss, bits per byte or perplexity, maximize a score (accuracy)")

    forecast: ForecastSettings | None = Field(
        None, description="with scales: forecast each verdict beyond the ladder (axis, and a target `at` or `compute`)")

    @pydantic.model_validator(mode="after")
    def _goal_of_the_metric(self):
        if self.goal is None:
            self.goal = goal_of(self.metric)
        return self


# metrics of the run's own tokens: they compare arms only where every arm has one tokenizer
PER_TOKEN_METRICS = ("val_loss", "train_loss")


def _leaf_paths(settings: dict, prefix: str = "") -> list[str]:
    """The dotted paths an arm's `set` reaches, written dotted or nested: {model: {norm: x}} and
    {model.norm: x} both set model.norm."""
    paths = []
    for key, value in settings.items():
        path = f"{prefix}{key}"
        paths += _leaf_paths(value, path + ".") if isinstance(value, dict) and value else [path]
    return paths


def goal_of(metric: str) -> str:
    """Whether lower or higher is better for a metric, from its name: losses, bits per byte and
    perplexities are minimised, scores (accuracy, exact match) maximised."""
    return "minimize" if metric.split("/")[-1].endswith(("loss", "bpb", "perplexity", "ppl")) else "maximize"


class SearchDimension(Settings):
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


class TuneSettings(Settings):
    """Per-arm tuning with one budget for every arm, before the comparison over seeds."""

    model_config = pydantic.ConfigDict(extra="forbid")

    space: dict[str, SearchDimension] = Field(min_length=1, description="run field path -> range or choices")
    trials: int = Field(8, gt=0, description="trials per arm (pruned ones count)")
    timeout_s: float | None = Field(None, gt=0, description="time budget per arm, on top of trials")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: Seed = Field(0, description="training seed of the tuning trials (and the sampler's seed)")

    @pydantic.model_validator(mode="after")
    def _paths_and_grid(self):
        for path in self.space:
            if path.split(".")[0] not in ("model", "train", "data"):
                raise ValueError(f"tune.space.{path} must start with model., train. or data.")
        if self.sampler == "grid" and any(d.type != "categorical" for d in self.space.values()):
            raise ValueError("the grid sampler needs categorical dimensions only")
        return self


class SeedRange(Settings):
    """Seeds 0, 1, ... added one at a time while some verdict is unsettled (see
    harness.report.sequential): every arm trains `min` seeds, then the unsettled ones more."""

    model_config = pydantic.ConfigDict(extra="forbid")

    min: int = Field(3, ge=2, description="seeds every arm trains first")
    max: int = Field(10, ge=2, le=MOST_RUNS, description="most seeds an arm trains")

    @pydantic.model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"seeds.min ({self.min}) must not exceed seeds.max ({self.max})")
        return self


def _also_a_count(schema: dict) -> None:
    schema["anyOf"].append({"type": "integer", "minimum": 1, "description": "how many seeds: 0, 1, ..."})


class StudySpec(Settings):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="letters, digits, _ . -")
    description: ShowableText = ""
    base: BaseSettings = BaseSettings()
    data: DataConfig = DataConfig()
    eval: EvalConfig | None = Field(None, description="downstream tasks scored on every run (lm-evaluation-harness)")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="path -> values; arms are their product")
    arms: list[Arm] = Field(default_factory=list)
    seeds: list[Seed] | SeedRange = Field(
        default_factory=lambda: [0], json_schema_extra=_also_a_count,
        description="the seeds, how many (0, 1, ...), or {min, max} to add seeds while a verdict is unsettled")
    plugins: list[str] = Field(default_factory=list)
    match: Literal["params"] | None = Field(None, description="params: equal non-embedding parameters per arm")
    report: ReportSettings = ReportSettings()
    tune: TuneSettings | None = None
    scales: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="path (base.model.d_model, base.train.steps, data....) -> values: every arm runs at every "
                    "scale and gets a verdict per scale; several paths change together (their lists are zipped)")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named sets of overrides (path: value), chosen with --profile")
    _plugin_code: dict[str, str] = pydantic.PrivateAttr(default_factory=dict)

    @property
    def plugin_code(self) -> dict[str, str]:
        """Plugin name -> what identifies its code, for every plugin the study loads (its
        `plugins:` and `--plugin`): each enters the key of every run of the study, whether or not
        the run uses a variant of it, since its import ran in the process that trains them."""
        return self._plugin_code

    @pydantic.field_validator("seeds", mode="before")
    @classmethod
    def _count_or_list(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("seeds must be a positive count, a list of seeds or {min, max}")
            if value > MOST_RUNS:
                raise ValueError(f"{value:,} seeds is more runs than a study may plan ({MOST_RUNS:,})")
            return list(range(value))
        if isinstance(value, list) and not value:
            raise ValueError("seeds must not be empty")
        if isinstance(value, list):
            for index, seed in enumerate(value):
                if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
                    raise ValueError(f"seeds[{index}] = {seed} is outside 0 to {MAX_SEED}: a seed is a 32-bit unsigned "
                                     "integer, as torch and NumPy take it")
        return value

    @pydantic.model_validator(mode="after")
    def _arms_well_formed(self):
        if self.grid and self.arms:
            raise ValueError("give either grid or arms, not both")
        for path, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{path} has no values")
        combinations = math.prod(len(values) for values in self.grid.values())
        if combinations > MOST_RUNS:  # refused before a single arm is made
            raise ValueError(f"the grid makes {combinations:,} arms, more than a study may plan ({MOST_RUNS:,} runs)")
        names = [arm.name for arm in self.arm_list()]
        duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")
        if len(set(self.seed_list)) != len(self.seed_list):
            raise ValueError("seeds must not repeat")
        for arm in self.arm_list():
            if arm.seeds is not None and self.sequential:
                raise ValueError(f"arm '{arm.name}' has seeds of its own, which needs a fixed list of study seeds")
            if arm.seeds is not None and len(set(arm.seeds)) != len(arm.seeds):
                raise ValueError(f"the seeds of arm '{arm.name}' must not repeat")
        if self.report.baseline is not None and self.report.baseline not in names:
            raise ValueError(f"report.baseline '{self.report.baseline}' is not an arm; arms: {', '.join(names)}")
        self._check_scales()
        runs = sum(len(self.arm_seeds(arm)) for arm in self.arm_list()) * len(self.scale_list())
        if runs > MOST_RUNS:
            raise ValueError(f"the study plans {runs:,} runs, more than {MOST_RUNS:,}; check seeds, grid and scales")
        return self

    def _check_scales(self) -> None:
        if not self.scales:
            if self.report.forecast:
                raise ValueError("report.forecast needs scales: (a ladder of at least 3 scales to fit)")
            return
        lengths = {len(values) for values in self.scales.values()}
        if len(lengths) > 1 or min(lengths) < 2:
            raise ValueError("scales: every path needs the same number of values, at least 2 (they are zipped)")
        for path in self.scales:
            if not path.startswith(("base.model.", "base.train.", "data.")):
                raise ValueError(f"scales.{path} must start with base.model., base.train. or data.")
            run_path = path.removeprefix("base.")
            for arm in self.arm_list():
                if any(run_path == p or run_path.startswith(p + ".") or p.startswith(run_path + ".")
                       for p in _leaf_paths(arm.set)):
                    raise ValueError(f"scales.{path} is also set by arm '{arm.name}'; a scale applies to every arm")
        if self.tune or self.sequential:
            raise ValueError("scales cannot be combined with tune or with seeds {min, max}; run one study per scale")
        forecast = self.report.forecast
        if forecast:
            if forecast.at is not None and set(forecast.at) != set(self.scales):
                raise ValueError(f"report.forecast.at sets {', '.join(forecast.at)}; it needs the paths of scales: "
                                 f"{', '.join(self.scales)}")
            if min(lengths) < 3:
                raise ValueError(f"report.forecast fits three parameters per curve: it needs at least 3 scales, "
                                 f"not {min(lengths)}")
            model_paths = [p for p in self.scales if p.startswith("base.model.") and p != "base.model.context_length"]
            moved = {"params": model_paths, "tokens": [p for p in self.scales if p in TOKEN_PATHS]}.get(
                forecast.axis, list(self.scales))
            if not moved:
                raise ValueError(f"report.forecast.axis is {forecast.axis}, which none of the scales changes "
                                 f"({', '.join(self.scales)}); use axis: compute")
        labels = [label for label, _ in self.scale_list()]
        if len(set(labels)) != len(labels):
            raise ValueError("scales must not repeat")

    def scale_list(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, run path -> value) per scale, smallest first as written; [("", {})] for a
        study without scales."""
        if not self.scales:
            return [("", {})]
        paths = list(self.scales)
        return [(",".join(f"{_short(p)}={_label(v)}" for p, v in zip(paths, values)),
                 {p.removeprefix("base."): v for p, v in zip(paths, values)})
                for values in zip(*(self.scales[p] for p in paths))]

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

    @property
    def seed_list(self) -> list[int]:
        """Every seed an arm may train (a sequential study's up to its max)."""
        return list(range(self.seeds.max)) if isinstance(self.seeds, SeedRange) else self.seeds

    @property
    def sequential(self) -> SeedRange | None:
        """The range within which seeds are added (harness.report.sequential's rule), when they
        are added sequentially."""
        return self.seeds if isinstance(self.seeds, SeedRange) else None

    def arm_seeds(self, arm: Arm) -> list[int]:
        return arm.seeds or self.seed_list


def _label(value) -> str:
    if isinstance(value, dict) and "name" in value:
        extra = {k: v for k, v in value.items() if k != "name"}
        return value["name"] + ("(" + ",".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
    return str(value)


def _short(path: str) -> str:
    return path.split(".")[-1]


def load_study(path: str | Path, overrides: list[str] | None = None, profile: str | None = None) -> StudySpec:
    """Read, apply a profile and overrides, load plugins and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise AblateError(f"study file {path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise AblateError(f"{path}: {path.stat().st_size:,} bytes is not a study file (at most {MAX_FILE_BYTES:,})")
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
    as_written = copy.deepcopy(raw)
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise AblateError(f"{path}: profiles must map profile names to overrides (path: value)")
        if profile not in profiles:
            raise AblateError(f"{path}: no profile '{profile}'; profiles: {', '.join(map(str, profiles)) or '(none)'}")
        if not isinstance(profiles[profile], dict):
            raise AblateError(f"{path}: profiles.{profile} must map paths to values")
        for key, value in profiles[profile].items():
            set_study_field(raw, str(key), value, str(path))
    before_overrides = copy.deepcopy(raw)
    for text in overrides or []:
        key, value = parse_override(text)
        set_study_field(raw, key, value, f"--set {text}")
    if _values_in(raw, MAX_VALUES) > MAX_VALUES:
        raise AblateError(f"{path}: the study stands for more than {MAX_VALUES:,} values once its YAML aliases "
                          "(*name) are expanded; write the values out, or use fewer aliases")
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise AblateError(f"{path}: plugins must be a list of module names or .py files")
    loaded = {}
    for plugin in plugins:
        try:
            name, code = load_plugin(plugin, base_dir=path.parent)
        except AblateError as err:
            raise AblateError(f"{path}: plugins: {err}") from None
        loaded[name] = code
    try:
        study = _resolved(raw, str(path))
    except AblateError:
        _blame_overrides(before_overrides, overrides or [], path)
        raise
    study.plugin_code.update(loaded)
    _check_profiles(as_written, path, skip=profile)
    return study


# a study is a page of settings; YAML aliases can make a few lines stand for billions of values
MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 100_000


def _values_in(node, limit: int) -> int:
    """How many values `node` stands for with its aliases expanded, counted up to just past `limit`
    (without expanding anything: a shared list is visited again, not copied)."""
    count, stack = 0, [node]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return count


def _validated(raw: dict, where: str) -> StudySpec:
    try:
        return StudySpec(**raw)
    except pydantic.ValidationError as err:
        raise AblateError(describe_validation_error(err, where, StudySpec)) from None
    except AblateError as err:
        raise AblateError(f"{where}: {err}") from None
    except TypeError as err:  # keys that are not strings
        raise AblateError(f"{where}: {err}") from None


def arm_spec(study: StudySpec, arm: Arm, where: str = "study", extra: dict[str, Any] | None = None,
             scale: dict[str, Any] | None = None) -> RunSpec:
    """The run of `arm` (seed 0) at `scale` (run path -> value, under the arm's own settings),
    with `extra` path -> value settings on top (tuned values)."""
    tree = {**study.base.run_tree(), "data": study.data.model_dump(mode="json"),
            "eval": study.eval.model_dump(mode="json") if study.eval else None}
    for path, value in {**(scale or {}), **arm.set, **(extra or {})}.items():
        set_run_field(tree, path, copy.deepcopy(value), f"{where}: arm '{arm.name}'")
    try:
        plugins = {"plugin." + re.sub(r"[^\w.-]", "_", name): code for name, code in study.plugin_code.items()}
        return RunSpec(study=study.name, arm=arm.name, sources=plugins, **tree)
    except pydantic.ValidationError as err:
        raise AblateError(describe_validation_error(err, f"{where}: arm '{arm.name}'", RunSpec)) from None
    except AblateError as err:
        raise AblateError(f"{where}: arm '{arm.name}': {err}") from None


def _resolved(raw: dict, where: str) -> StudySpec:
    """The study of `raw`, validated, with every arm at every scale resolved (without loading data)."""
    study = _validated(raw, where)
    target = study.report.forecast.at if study.report.forecast else None
    for arm in study.arm_list():
        for _, scale in study.scale_list():
            arm_spec(study, arm, where, scale=scale)
        if target:  # the model a forecast is for must be one that can be built
            arm_spec(study, arm, f"{where}: report.forecast.at", scale={p.removeprefix("base."): v
                                                                       for p, v in target.items()})
    return study


def _blame_overrides(before: dict, overrides: list[str], path: Path) -> None:
    """When the study is sound without its --set overrides, raise the error of the first
    override that breaks it alone, named as the user typed it: the file is not to blame."""
    if not overrides:
        return
    try:
        _resolved(copy.deepcopy(before), str(path))
    except AblateError:
        return  # the file itself is wrong: its own error stands
    for text in overrides:
        candidate = copy.deepcopy(before)
        key, value = parse_override(text)
        set_study_field(candidate, key, value, f"--set {text}")
        _resolved(candidate, f"--set {text}")


def _check_profiles(raw: dict, path: Path, skip: str | None) -> None:
    """Every profile of the file is checked now, on the machine at hand: a typo in the GPU
    profile must not wait for the GPU machine to fail. Each profile is applied to the study as
    written, and every arm at every scale is resolved (without loading data)."""
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        return  # StudySpec has said so already
    for name, overrides in profiles.items():
        if name == skip or not isinstance(overrides, dict):
            continue
        where = f"{path}: profile '{name}'"
        candidate = copy.deepcopy(raw)
        for key, value in overrides.items():
            set_study_field(candidate, str(key), value, where)
        _resolved(candidate, where)


def study_json_schema() -> dict:
    """The JSON Schema of a study file, with the variants registered now (plugins included)."""
    schema = StudySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ablate study"
    return schema
