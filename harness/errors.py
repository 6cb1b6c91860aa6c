"""The one exception type for mistakes a user can make, and its formatting.

Anything raised as :class:`AblateError` is shown by the CLI as a single message with exit
code 2. Everything else is a bug in ablate and keeps its traceback.
"""

from __future__ import annotations

import pydantic


class AblateError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


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
