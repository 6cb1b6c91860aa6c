"""The one exception type for mistakes a user can make, and its formatting.

Anything raised as :class:`AblateError` is shown by the CLI as a single message with exit
code 2. Everything else is a bug in ablate and keeps its traceback.
"""

from __future__ import annotations

import errno
import os

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
    "or run from a folder you may write to", errno.EROFS: "the file system is read-only; run from another folder",
    errno.ENAMETOOLONG: "use a shorter name", errno.ENOTDIR: "a file stands where a folder must be; move it away",
    errno.EISDIR: "a folder stands where a file must be; move it away",
    errno.EEXIST: "a file stands where a folder must be; move it away", errno.ELOOP: "a link loops; remove it",
}


def file_fault(err: BaseException, path: str | os.PathLike | None = None) -> FileFault | None:
    """The FileFault that `err`, or an exception it was raised from, amounts to (naming `path`
    when the error does not name its file); None for anything else."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, FileFault):
            return seen
        if isinstance(seen, OSError) and seen.errno in _FILE_FAULT_HINTS:
            where = seen.filename or path or "a local file"
            return FileFault(f"{os.strerror(seen.errno)}: {os.fspath(where)} ({_FILE_FAULT_HINTS[seen.errno]}; "
                             "then run the same command again)")
        seen = seen.__cause__ or seen.__context__
    return None


def describe_validation_error(err: pydantic.ValidationError, where: str = "") -> str:
    """One readable message from a pydantic error: 'where: field.path: problem' per line."""
    lines = []
    for problem in err.errors():
        path = ".".join(str(part) for part in problem["loc"] if not _is_union_tag(part))
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    prefix = f"{where}: " if where else ""
    if len(lines) == 1:
        return prefix + lines[0]
    return prefix + "invalid settings\n" + "\n".join(f"  - {line}" for line in lines)


def _is_union_tag(part) -> bool:
    # pydantic names the union member it tried ("str", "function-after[...]"): noise for a person
    return isinstance(part, str) and ("[" in part or part in {"str", "dict", "int", "float"})
