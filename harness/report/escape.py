"""User strings (study, arm, variant, metric names, descriptions) in reports: text, never markup.

Markdown would read `|` as a column break, `*` `_` `` ` `` `[` as formatting and `<` as HTML;
matplotlib would read `$...$` as mathtext (and raise on `^$`). Names are escaped for each place
they go; names that could not be shown faithfully anywhere (control characters) are refused
when they are given (harness.names).
"""

from __future__ import annotations

import contextlib
import re
import warnings

import pandas as pd

# punctuation that means something inside a line of GitHub markdown: emphasis, code, links,
# HTML and entities, table cells, strikethrough, math (a line's start is markdown_lines' care).
# An underscore between two letters or
# digits never emphasises (CommonMark), so `batch_size` stays as it is written.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>|~$&]|_(?![^\W_])|(?<![^\W_])_")


# what opens a block at a line's start: a heading, a list item, a setext underline, an ordered item
_BLOCK_START = re.compile(r"^([#+=-])|^(\d+)([.)])")


def markdown_text(text: object) -> str:
    """`text` as literal markdown: punctuation escaped, line breaks turned into spaces."""
    return _MARKDOWN_SPECIAL.sub(lambda found: "\\" + found.group(), " ".join(str(text).splitlines()))


def markdown_lines(text: object) -> str:
    """Text of several lines (a description) as literal markdown, line for line: each line is
    markdown_text without its indentation (four spaces make a code block), and a start that
    would open a heading, a list or a setext underline is escaped."""
    lines = [markdown_text(line.strip()) for line in str(text).strip().splitlines()]
    return "\n".join(_BLOCK_START.sub(lambda found: found.group(2) + "\\" + found.group(3) if found.group(2)
                                      else "\\" + found.group(1), line) for line in lines)


def code_span(text: object) -> str:
    """`text` as a markdown code span, whatever backticks it holds (CommonMark: the fence is
    longer than any run of backticks inside; a table row would still need its `|` escaped)."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(frame: pd.DataFrame, text_columns: tuple[str, ...]) -> str:
    """`frame` as a GitHub markdown table whose `text_columns` (user strings) are literal text."""
    frame = frame.copy()
    for column in text_columns:
        frame[column] = [markdown_text(value) for value in frame[column]]
    frame.columns = [markdown_text(column) for column in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True)


@contextlib.contextmanager
def literal_figure_text():
    """Every text a figure gets inside is drawn as written: no mathtext (`$`), and a glyph the
    font lacks (an emoji) is a blank box rather than a warning per glyph. Also a decorator."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        warnings.filterwarnings("ignore", message="Tight layout not applied")  # a long label: the figure is still drawn
        yield


FIGURE_LABEL = 40  # characters of a name a figure shows; the report's tables show it whole


def figure_label(name: object) -> str:
    """`name` shortened for a legend or an axis (with "…"), so a long one does not push the
    others off the figure."""
    text = str(name)
    return text if len(text) <= FIGURE_LABEL else text[:FIGURE_LABEL - 1] + "…"


def literal_legend(axes, entries: list[tuple[object, str]]) -> None:
    """A legend of (artist, label) entries with every label shown: matplotlib leaves out a label
    that starts with "_" when it gathers labels itself, and an arm may be called "_control"."""
    if entries:
        handles, labels = zip(*entries)
        axes.legend(handles, labels)
