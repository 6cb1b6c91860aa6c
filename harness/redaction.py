"""Passwords stay in the URLs they were given in: never in params, tags, logs or reports."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host (also for URLs urllib would reject)
_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*):[^@\s]*@")


def redact(uri: str) -> str:
    """The URI with any password replaced, fit for messages, tags and reports."""
    return _CREDENTIALS.sub(r"\1:***@", uri)


def error_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (or its type's name), with passwords redacted: a
    library's error may quote the URL it was given."""
    lines = str(err).strip().splitlines()
    return redact(lines[0] if lines else type(err).__name__)[:limit]
