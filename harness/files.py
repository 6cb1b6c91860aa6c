"""Every file ablate writes (checkpoints, kept tracking records, reports, figures, cached
tokens and tokenizers) is written whole or not at all.

The content goes to a private file beside the target, which replaces the target in one step
once complete. If writing fails (a full disk, a read-only folder, a file-size limit, a kill),
the private file is removed and the target keeps its earlier content; a local file fault is
raised as one :class:`~harness.errors.FileFault` naming the target and its errno.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from harness.errors import file_fault


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """write(private_path) writes the whole content; then it becomes `path`. Raises FileFault
    naming `path` for a local file fault; anything else as it was."""
    path = Path(path)
    private = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(private)
        os.replace(private, path)
    except BaseException as err:
        try:
            private.unlink(missing_ok=True)
        except OSError:
            pass
        # torch.save reports a full disk as a RuntimeError raised while handling the OSError
        fault = file_fault(err, name=path) if isinstance(err, Exception) else None
        if fault is None:
            raise
        raise fault from None


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda private: private.write_text(text, encoding="utf-8"))


def write_csv(frame, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV, without its index."""
    write_atomically(path, lambda private: frame.to_csv(private, index=False))


def save_figure(figure, path: str | os.PathLike) -> None:
    """A matplotlib figure, in the format its file name says."""
    write_atomically(path, lambda private: figure.savefig(private, format=Path(path).suffix[1:], dpi=120))


def study_folder(root: str | Path, name: str) -> Path:
    """root/<name> for a study's reports or runs, always directly under `root`: a study read
    back by its MLflow experiment's name ('../../x', '/abs/path') gets a name made safe."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "_"
    return Path(root) / safe
