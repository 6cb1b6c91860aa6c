"""Where a run's numbers come from, in MLflow's own vocabulary: the dataset as a run input
(`log_inputs`, shown in the UI's Datasets column), MLflow's standard source tags, and the
plugin code a run used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

from harness import __version__
from harness.config.run import RunSpec
from harness.registry import BUILT_IN_PACKAGE, lookup

# MLflow keeps at most 36 characters of a dataset digest
DIGEST_CHARS = 32


def _git(*args: str) -> str:
    here = str(Path(__file__).resolve().parent)
    try:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def ablate_commit() -> str:
    """The full commit of ablate's own checkout; '' when ablate was installed from a package."""
    return _git("rev-parse", "HEAD")


@functools.cache
def git_commit() -> str:
    """The short commit of ablate's own checkout, `-dirty` when it has uncommitted edits;
    'unknown' when ablate was installed from a package."""
    commit = ablate_commit()[:12]
    if not commit:
        return "unknown"
    return commit + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def version_tags() -> dict[str, str]:
    """What ablate code a run was trained with (a report says when its runs differ), with
    MLflow's standard source tags where the commit is known."""
    tags = {"ablate_version": __version__, "git_commit": git_commit(), "mlflow.source.name": "ablate",
            "mlflow.source.type": "PROJECT"}
    if ablate_commit():
        tags["mlflow.source.git.commit"] = ablate_commit()
    return tags


def plugin_tags(spec: RunSpec) -> dict[str, str]:
    """The plugin variants a run used: where each came from (package or file), and its
    package version and file hash."""
    plugins = []
    for slot, name in spec.variants():
        variant = lookup(slot, name)
        if variant.package != BUILT_IN_PACKAGE:
            plugins.append(f"{slot}.{name}={variant.source} {variant.code}".strip())
    return {"ablate.plugins": "; ".join(plugins)} if plugins else {}


def dataset_input(spec: RunSpec, info: dict) -> dict[str, str]:
    """The run's dataset as the fields of an MLflow dataset input (sent by the run's outbox):
    its name, its content hash as digest, its source, and its split sizes and tokenizer as
    profile."""
    data = {k.removeprefix("data_"): v for k, v in info.items() if k.startswith("data_")}
    content = spec.sources.get("data") or hashlib.sha256(spec.data.model_dump_json().encode()).hexdigest()
    source = str(data.get("source", spec.data.dataset.name))
    source_type = "http" if source.startswith(("http://", "https://")) else "local" if "/" in source else "code"
    profile = {"sha256": content, "tokenizer": spec.data.tokenizer.name, "vocab_size": info.get("vocab_size"),
               "val_windows": spec.data.val_windows, "val_fraction": spec.data.val_fraction,
               **{k: v for k, v in data.items() if k.endswith("_tokens")}}
    return {"name": spec.data.dataset.name, "digest": content[:DIGEST_CHARS], "source_type": source_type,
            "source": json.dumps({"source": source, "options": spec.data.dataset.options}),
            "profile": json.dumps(profile, default=str), "context": "training"}
