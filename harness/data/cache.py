"""Where data is found ($ABLATE_DATA_DIR) and where downloaded files, tokenizers and tokenized
corpora are kept between runs ($ABLATE_CACHE_DIR)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.errors import AblateError, FileFault


def cache_dir() -> Path:
    """$ABLATE_CACHE_DIR, else $XDG_CACHE_HOME/ablate, else ~/.cache/ablate."""
    explicit = os.environ.get("ABLATE_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = f"{os.strerror(err.errno or 0)}: {err.filename or path}"
        raise FileFault(f"the cache folder {path} cannot be made ({reason}); set ABLATE_CACHE_DIR (or XDG_CACHE_HOME) "
                        "to a folder you may write to") from None
    return path


def content_hash(*parts: str | bytes) -> str:
    """A short sha256 over the parts, for cache keys."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def data_root() -> Path:
    """$ABLATE_DATA_DIR, else the current directory: what a dataset's relative path is under."""
    return Path(os.environ.get("ABLATE_DATA_DIR") or Path.cwd())


def data_path(path: str) -> str:
    """A dataset's path or glob: `~` expanded, and a relative one taken under data_root(), so one
    study file names a corpus alike on every machine and each machine says where its corpora are.
    Raises AblateError for a relative path when $ABLATE_DATA_DIR is a file, not a folder."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    root = data_root()
    if root.exists() and not root.is_dir():
        raise AblateError(f"'{path}' is taken under ABLATE_DATA_DIR={root}, which is a file, not a folder: set it to "
                          "the folder that holds your corpora")
    return str(root / path)
