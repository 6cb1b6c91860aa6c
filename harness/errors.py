"""The one exception type for mistakes a user can make, and its formatting.

Anything raised as :class:`AblateError` is shown by the CLI as a single message with exit
code 2. Everything else is a bug in ablate and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
import typing

import pydantic


class AblateError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class FileFault(AblateError):
    """A local file or folder cannot be written or read (no space left, no permission, a name too
    long, a file where a folder must be). Waiting would not cure it, unlike a store that does not
    answer: the run is marked failed and the study stops, naming the path."""


# what each errno asks of the user
_FILE_FAULT_HINTS = {
    errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (the disk quota is used up)",
    errno.EFBIG: "the file is larger than this system allows",
    errno.EACCES: "make it writable, or run from a folder you may write to", errno.EPERM: "make it writable, "
    "or run from a folder you may write to",
    errno.EROFS: "the file system is read-only; write elsewhere (another working folder, --runs-dir, --reports-dir, "
                 "ABLATE_CACHE_DIR)",
    errno.ENAMETOOLONG: "use a shorter name", errno.ENOTDIR: "a file stands where a folder must be; move it away",
    errno.EISDIR: "a folder stands where a file must be; move it away",
    errno.EEXIST: "a file stands where a folder must be; move it away", errno.ELOOP: "a link loops; remove it",
}


def causes(err: BaseException | None) -> typing.Iterator[BaseException]:
    """`err`, the exception it was raised from or during, that one's, ...: libraries wrap the
    error that says what happened (an OSError, a refused connection) in their own."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def file_fault(err: BaseException, path: str | os.PathLike | None = None, *,
               name: str | os.PathLike | None = None) -> FileFault | None:
    """The FileFault that `err`, or an exception it was raised from, amounts to (naming `path`
    when the error does not name its file, and `name` in any case: the file a person knows, not
    a private one written on its behalf); None for anything else."""
    for seen in causes(err):
        if isinstance(seen, FileFault):
            return seen
        if isinstance(seen, OSError) and seen.errno in _FILE_FAULT_HINTS:
            where = name or seen.filename or path or "a local file"
            return FileFault(f"{os.strerror(seen.errno)}: {os.fspath(where)} ({_FILE_FAULT_HINTS[seen.errno]}; "
                             "then run the same command again)")
    return None


def describe_validation_error(err: pydantic.ValidationError, where: str = "",
                              model: type[pydantic.BaseModel] | None = None) -> str:
    """One readable message from a pydantic error: 'where: field.path: problem' per line. Given
    the `model` that was validated, an unknown field name gets the closest of its own names."""
    lines = []
    for problem in err.errors():
        loc = [part for part in problem["loc"] if not _is_union_tag(part)]
        path = ".".join(map(str, loc))
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden" and model is not None and loc:
            message += did_you_mean(str(loc[-1]), field_names(model, loc[:-1]))
        if problem["type"] == "string_pattern_mismatch":
            message = _pattern_message(problem, model, loc)
        lines.append(f"{path}: {message}" if path else message)
    prefix = f"{where}: " if where else ""
    if len(lines) == 1:
        return prefix + lines[0]
    return prefix + "invalid settings\n" + "\n".join(f"  - {line}" for line in lines)


# the names nanoGPT, Hugging Face and habit give the settings ablate calls otherwise
SYNONYMS = {"learning_rate": "lr", "n_layers": "n_layer", "num_layers": "n_layer", "num_hidden_layers": "n_layer",
            "n_heads": "n_head", "num_heads": "n_head", "num_attention_heads": "n_head", "n_embd": "d_model",
            "hidden_size": "d_model", "block_size": "context_length", "max_position_embeddings": "context_length",
            "seq_len": "context_length", "max_iters": "steps", "max_steps": "steps", "iters": "steps",
            "batch": "batch_size", "seed": "seeds", "eval_iters": "val_windows", "eval_every": "eval_interval",
            "log_every": "log_interval", "warmup_iters": "warmup_steps", "warmup": "warmup_steps",
            "weight_decay_rate": "weight_decay", "clip_grad": "grad_clip", "max_grad_norm": "grad_clip",
            "gradient_accumulation_steps": "grad_accum", "activation": "mlp", "pos_embedding": "position",
            "dataset_name": "dataset"}


def did_you_mean(name: str, known: list[str]) -> str:
    """' (did you mean 'lr'?)' when `name` is a synonym or a near miss of one of `known`, else ''."""
    if SYNONYMS.get(name) in known:
        return f" (did you mean '{SYNONYMS[name]}'?)"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def field_names(model: type[pydantic.BaseModel], path: list) -> list[str]:
    """The field names of the settings `model` holds at `path` (['base', 'train'] -> TrainConfig's)."""
    inner = _model_at(model, path)
    return list(inner.model_fields) if inner else []


def _model_at(model: type[pydantic.BaseModel], path: list) -> type[pydantic.BaseModel] | None:
    """The settings class `model` holds at `path`, or None where no settings class is."""
    for part in path:
        field = model.model_fields.get(str(part))
        inner = [t for t in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(t, type) and issubclass(t, pydantic.BaseModel)] if field else []
        if not inner:
            return None
        model = inner[0]
    return model


def _pattern_message(problem: dict, model: type[pydantic.BaseModel] | None, loc: list) -> str:
    """What a string that does not match a field's pattern may hold, in words (the field's
    description), not as the regular expression."""
    owner = _model_at(model, loc[:-1]) if model is not None and loc else None
    field = owner.model_fields.get(str(loc[-1])) if owner else None
    allowed = f": use {field.description}, starting with a letter or digit" if field and field.description else ""
    return f"{problem['input']!r} is not allowed here{allowed}"


def _is_union_tag(part) -> bool:
    # pydantic names the union member it tried ("str", "function-after[...]", "StudyRun"): noise
    # for a person (settings are named in lower case)
    return isinstance(part, str) and ("[" in part or part in {"str", "dict", "int", "float"} or part[:1].isupper())
