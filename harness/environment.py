"""Environment variables set for a while: for what this process starts or asks of a library."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """Set `variables` in os.environ, and restore what was there (or wasn't) afterwards."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
