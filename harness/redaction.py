"""Passwords stay in the URLs they were given in: never in params, tags, logs or reports."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host (also for URLs urllib would reject)
_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]*@")


def redact(uri: str) -> str:
    """The URI with any password replaced, fit for messages, tags and reports."""
    return _CREDENTIALS.sub(r"\1:***@", uri)
