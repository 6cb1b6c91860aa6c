"""What a user may call things.

Variant names are written in YAML, on command lines and in MLflow artifact paths
(`plugins/<slot>.<name>/`): letters, digits and `_ . + -`. Arm names and descriptions are free
text, escaped wherever they are shown (harness.report.escape), except what no place can show
faithfully: control characters, the bidirectional controls that make a table display other
text than it holds (CVE-2021-42574, "Trojan Source"), invisible format characters, and white
space at either end of a name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

import pydantic

VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
BIDI_CONTROLS = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}
# invisible format characters that emoji and some scripts need (zero-width joiner and non-joiner)
JOINERS = {"\u200c", "\u200d"}


def unshowable(text: str, allow_newlines: bool = False) -> str | None:
    """The first character of `text` no report can show as itself (U+XXXX and its name), or None:
    controls, line separators, bidirectional controls, and invisible format characters (a zero
    width space makes "a\u200bb" look like "ab")."""
    for char in text:
        if allow_newlines and char in "\n\t":
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS or (category == "Cf" and char not in JOINERS):
            return f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"
    return None


def _showable(text: str, allow_newlines: bool) -> str:
    found = unshowable(text, allow_newlines)
    if found:
        raise ValueError(f"{text!r} holds {found}, which no report shows as itself; use printable characters")
    return text


def _name(text: str) -> str:
    if text != text.strip():
        raise ValueError(f"{text!r} starts or ends with white space, which no table shows; write the name without it")
    return _showable(text, allow_newlines=False)


ShowableName = Annotated[str, pydantic.Field(min_length=1, max_length=100), pydantic.AfterValidator(_name)]
ShowableText = Annotated[str, pydantic.AfterValidator(lambda text: _showable(text, allow_newlines=True))]
