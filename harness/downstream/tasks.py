"""The tasks of an `eval:` section, found offline and scored through lm-evaluation-harness.

A task is one of:
- `python_cloze`, shipped with ablate (harness.downstream.python_cloze);
- the path of an lm-eval task YAML (a file ending in .yaml/.yml) whose data are local files,
  e.g. `dataset_path: json` with `dataset_kwargs: {data_files: {test: items.jsonl}}` (paths
  relative to the working folder);
- an lm-eval task name (`hellaswag`, `arc_easy`), its data read from the local Hugging Face
  datasets cache: ablate never downloads them (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are set
  unless the environment says otherwise). Prepare a cache where there is network with
  `python -c "import lm_eval.tasks as t; t.get_task_dict(['hellaswag'])"`.

A task whose data cannot be read is refused before any training (`check_tasks`), naming the
task and where its data were looked for. Scores are logged as `task/metric` (lm-eval's
`acc_norm,none` becomes `hellaswag/acc_norm`) with `task/metric_stderr`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

from harness.config.eval import EvalConfig
from harness.downstream.python_cloze import PYTHON_CLOZE, python_cloze_task
from harness.errors import AblateError
from harness.redaction import error_line

# ablate reads datasets and models from the local caches only (as `init_from: hf:` does)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# lm-eval's bootstrap resamples for the standard errors of metrics without a closed form
# (acc and acc_norm have one; these are for the others), fewer than its default 100,000
BOOTSTRAP_ITERS = 1000


def _is_file_task(task: str) -> bool:
    return task.endswith((".yaml", ".yml"))


def task_specs(cfg: EvalConfig) -> list:
    """What lm-eval is given for each task: the shipped task's config, a YAML path, or a name."""
    return [python_cloze_task() if task == PYTHON_CLOZE else str(Path(task).resolve()) if _is_file_task(task) else task
            for task in cfg.tasks]


def _task_manager(cfg: EvalConfig):
    from lm_eval.tasks import TaskManager

    named = [task for task in cfg.tasks if task != PYTHON_CLOZE and not _is_file_task(task)]
    return TaskManager(include_defaults=bool(named))  # indexing lm-eval's own 14,000 tasks takes seconds


def _where(task: str) -> str:
    if _is_file_task(task):
        return f"the task file {task} and the data files it names"
    import datasets

    offline = " (offline)" if datasets.config.HF_HUB_OFFLINE else ""
    return f"the Hugging Face datasets cache {datasets.config.HF_DATASETS_CACHE}{offline}"


def check_tasks(cfg: EvalConfig) -> dict[str, bool]:
    """Build every task of `cfg`, its data read: the metrics they log (`task/metric`), each with
    whether higher is better. Raises AblateError naming the first task that cannot be built and
    where its data were looked for."""
    return {f"{name}/{metric}": bool(higher)
            for name, task in _built(cfg) for metric, higher in task.higher_is_better().items()}


# the tasks built in this process, per eval config: a run scores them at every evaluation, and
# building one reads its data
_BUILT: dict[str, list] = {}


def _built(cfg: EvalConfig) -> list:
    """(name, lm-eval Task) of every task of `cfg` (a group's tasks each on its own), built once
    per process."""
    # a task file edited since it was built is built again
    files = [(task, os.stat(task).st_mtime_ns) for task in cfg.tasks if _is_file_task(task) and Path(task).is_file()]
    key = json.dumps([cfg.tasks, files])
    if key in _BUILT:
        return _BUILT[key]
    try:
        from lm_eval.tasks import get_task_dict
    except ImportError:
        raise AblateError("eval: tasks are scored by lm-evaluation-harness, which is not installed here: "
                          "pip install 'ablate[eval]'") from None
    manager = _task_manager(cfg)
    built = []
    for task, spec in zip(cfg.tasks, task_specs(cfg)):
        if _is_file_task(task) and not Path(task).is_file():
            raise AblateError(f"eval task {task}: no such task file")
        if not _is_file_task(task) and isinstance(spec, str) and spec not in manager.all_tasks:
            raise AblateError(f"eval task '{task}' is not an lm-eval task, a task YAML (.yaml) or {PYTHON_CLOZE}")
        try:
            with _quiet():
                found = list(_tasks_in(get_task_dict([spec], manager)))
        except Exception as err:
            raise AblateError(f"eval task '{task}': its data are not available ({type(err).__name__}: "
                              f"{error_line(err, 200)}); looked in {_where(task)}") from None
        for name, _ in found:
            if not METRIC_NAME.fullmatch(name) or ".." in name:
                raise AblateError(f"eval task {task}: its name {name!r} cannot name MLflow metrics ({name}/acc); "
                                  "use letters, digits, _ - . and spaces")
            if name in {other for other, _ in built}:
                raise AblateError(f"eval task {task}: another task of eval.tasks is named '{name}' too, so their "
                                  "metrics would be one; rename one (its `task:`)")
        built += found
    _BUILT[key] = built
    return built


def task_fingerprint(cfg: EvalConfig) -> str:
    """What the tasks of `cfg` score on, as a hash: each task's name, its configuration and every
    example it holds. It enters the key of every run that scores them (harness.study.plan), so
    a task file or data file edited, or a cache holding another version of a dataset, makes
    new runs instead of reporting scores of other questions as these."""
    digest = hashlib.sha256()
    for name, task in _built(cfg):
        config = json.dumps(task.config.to_dict(), sort_keys=True, default=_stable)
        digest.update(f"{name}\0{config}\0".encode())
        for doc in task.eval_docs:
            digest.update(json.dumps(doc, sort_keys=True, default=_stable).encode())
    return digest.hexdigest()[:16]


def _stable(value) -> str:
    """A value JSON cannot hold, named the same in every process (a `!function` by its name,
    never by a repr with its address)."""
    return getattr(value, "__qualname__", type(value).__name__)


# what MLflow takes in a metric name (its validation rules), a slash between task and metric aside
METRIC_NAME = re.compile(r"[\w\-. ]+")


def check_readable(cfg: EvalConfig, tokenizer) -> None:
    """Refuse tasks whose text a character tokenizer cannot encode (the only kind that cannot
    read any text), before any training: the characters of every request the tasks make, up to
    `eval.limit` examples each, must be in its vocabulary."""
    if tokenizer.kind != "char":
        return
    known = set(tokenizer.state()["chars"])
    for name, task in _built(cfg):
        if task.get_config("num_fewshot") is None:  # as lm-eval's simple_evaluate leaves it
            task.set_config(key="num_fewshot", value=cfg.num_fewshot or 0)
        with _quiet():
            task.build_all_requests(limit=cfg.limit, rank=0, world_size=1)
        text = "".join(part for request in task.instances for part in request.args if isinstance(part, str))
        unknown = sorted(set(text) - known)
        if unknown:
            raise AblateError(f"eval task {name}: its text has characters the runs' character vocabulary lacks "
                              f"({''.join(unknown[:10])!r}); score tasks written in its characters, or train "
                              "with a bpe or tiktoken tokenizer")


def _tasks_in(built: dict):
    """(name, task) of every task in lm-eval's task dict, groups opened."""
    for key, value in built.items():
        if isinstance(value, dict):
            yield from _tasks_in(value)
        else:
            yield str(key), value


def run_tasks(lm, cfg: EvalConfig) -> dict[str, float]:
    """Score `lm` (an lm-eval language model) on the tasks of `cfg`: metric name -> value."""
    from lm_eval import simple_evaluate

    with _quiet():
        # no global seeds: scoring must not move the training's random streams; few-shot
        # examples are drawn by each task's own seeded sampler
        evaluated = simple_evaluate(model=lm, tasks=[task for _, task in _built(cfg)], num_fewshot=cfg.num_fewshot,
                                    limit=cfg.limit, log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS,
                                    task_manager=_task_manager(cfg), random_seed=None, numpy_random_seed=None,
                                    torch_random_seed=None, fewshot_random_seed=0)
    return task_metrics(evaluated["results"])


def task_metrics(results: dict[str, dict]) -> dict[str, float]:
    """lm-eval's results (task -> {"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}) as
    flat metric names: {"task/acc": 0.5, "task/acc_stderr": 0.1}; a filter other than "none"
    is added to the name ("task/exact_match_strict-match"). Values that are no number (lm-eval's
    "N/A" standard errors) are left out."""
    metrics = {}
    for task, values in results.items():
        for key, value in values.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            suffix = "" if filter_name == "none" else f"_{filter_name}"  # gsm8k's exact_match,strict-match
            if name.endswith("_stderr"):  # its standard error follows it: task/metric[_filter]_stderr
                metrics[f"{task}/{name.removesuffix('_stderr')}{suffix}_stderr"] = float(value)
            else:
                metrics[f"{task}/{name}{suffix}"] = float(value)
    return metrics


# a tqdm progress bar as drawn: "Tokenizing inputs:  40%|####      | 160/400 [00:00<00:00, 1.2it/s]"
PROGRESS_BAR = re.compile(r"[^\r\n]*\d+%\|[^\r\n]*\|[^\r\n]*[\r\n]?")


@contextlib.contextmanager
def _quiet():
    """lm-eval logs every step at INFO, draws progress bars (tqdm's, and datasets') that cannot
    be turned off, and asks git for a commit (which complains outside a repository); a study
    shows its own progress. Meanwhile, what Python writes to stderr is held and written after,
    progress bars left out (a warning from elsewhere in the process is late, never lost), and
    what other programs write there is dropped."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    held = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        with contextlib.redirect_stderr(held):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        logger.setLevel(level)
        kept = PROGRESS_BAR.sub("", held.getvalue())
        if kept.strip():
            sys.stderr.write(kept)
            sys.stderr.flush()
