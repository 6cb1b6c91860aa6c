"""A local sqlite store (MLflow's mlflow.db, Optuna's optuna.db) appears whole or not at all.

MLflow and Optuna create a store's schema with dozens of statements, not in one transaction: a
first run killed in the middle left a file with some tables and not others, which no later run
could open ("table datasets already exists"). The schema is now created in a private file beside
the store and linked into place in one step. A kill leaves at most a stray private file (the
next creation removes it), and of two first runs started together, one links its file and the
other opens that one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from harness.environment import process_alive
from harness.errors import AblateError, FileFault, causes, file_fault
from harness.redaction import error_line

PRIVATE_SUFFIX = ".creating"


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///` URL (relative or absolute), or None for any other store."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def create_whole(url: str, create: Callable[[str], None]) -> None:
    """If `url` names a sqlite file that does not exist, `create(private_url)` builds the store
    in a private file, which then becomes the store's file in one step. Anything else: nothing."""
    path = sqlite_file(url)
    if path is None or path.exists() or not path.parent.is_dir():
        return  # no folder: the library's own error names the path
    private = path.with_name(f".{path.name}.{os.getpid()}{PRIVATE_SUFFIX}")
    try:
        _remove_abandoned(path)
        private.unlink(missing_ok=True)
        try:
            create(f"sqlite:///{private}")
            try:
                os.link(private, path)  # fails if the file appeared meanwhile: never replaces a store
            except FileExistsError:
                pass  # another first run linked its store first; both are empty
        finally:
            private.unlink(missing_ok=True)
    except Exception as err:  # a folder that cannot be written: name the store, not the private file
        fault = file_fault(err, name=path) or sqlite_file_fault(err, f"sqlite:///{path}")
        if fault is None:
            raise
        raise fault from None


# a store file written within this many seconds may be midway through its creation
BEING_WRITTEN_S = 2.0


def wait_while_created_elsewhere(path: Path, whole: Callable[[Path], bool], patience_s: float) -> None:
    """Wait (at most `patience_s`) while another program creates the store at `path`: its file is
    being written now and `whole(path)` says its schema is not complete yet."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            written = time.time() - path.stat().st_mtime
        except OSError:
            return  # no file yet: create_whole makes it
        if written > BEING_WRITTEN_S or whole(path):
            return
        time.sleep(0.25)


def _remove_abandoned(path: Path) -> None:
    """Private files (and their journals) of creators that died while creating the store."""
    prefix = f".{path.name}."
    for stray in path.parent.glob(f"{prefix}*{PRIVATE_SUFFIX}*"):
        pid = stray.name.removeprefix(prefix).split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            stray.unlink(missing_ok=True)


# sqlite's words for a fault of its file rather than of a connection: waiting would not cure it
_FILE_FAULT_WORDS = ("readonly database", "database or disk is full", "unable to open database file",
                     "disk i/o error")


def sqlite_file_fault(err: BaseException, url: str | None = None) -> FileFault | None:
    """A FileFault naming the store's file (of `url`, or any local sqlite store) when `err`
    says that file cannot be written."""
    path = sqlite_file(url) if url else None
    if url and path is None:
        return None
    for seen in causes(err):
        words = next((w for w in _FILE_FAULT_WORDS if w in str(seen).lower()), None)
        if words:
            store = path or "a local sqlite store (mlflow.db, optuna.db)"
            return FileFault(f"the store {store} cannot be written ({words}): free some space or make it and its "
                             "folder writable, then run the same command again")
    return None


def user_error(err: BaseException) -> str | None:
    """What the user is told when `err` ends a command: an AblateError's message, or a local
    file fault on any path ablate writes (a store's database included); None for a bug, which
    keeps its traceback."""
    if isinstance(err, AblateError):
        return str(err)
    if isinstance(err, MemoryError):  # the machine's memory, or a limit set on the process (ulimit -v, -d)
        return (f"out of memory ({error_line(err) or 'an allocation failed'}); free memory, raise the process's "
                "memory limit, or lower train.batch_size or the model's size")
    fault = file_fault(err) or sqlite_file_fault(err)
    return str(fault) if fault else None
