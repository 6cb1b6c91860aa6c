"""Passwords stay in the URLs they were given in: never in params, tags, logs or reports."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host (also for URLs urllib would reject, and
# passwords with an unencoded @: everything up to the last @ before the host is the password)
_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]*):\S*@(?=[^@\s]*(?:\s|$))")
# ?password=...&... as SQLAlchemy and libpq also take it
_QUERY_SECRETS = re.compile(r"(?i)([?&](?:password|passwd|pwd|pass|secret|token|api_key)=)[^&\s#]*")


def redact(uri: str) -> str:
    """The URI with any password replaced, fit for messages, tags and reports."""
    return _QUERY_SECRETS.sub(r"\1***", _CREDENTIALS.sub(r"\1:***@", uri))


def error_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (or its type's name), with passwords redacted: a
    library's error may quote the URL it was given."""
    lines = str(err).strip().splitlines()
    return redact(lines[0] if lines else type(err).__name__)[:limit]
