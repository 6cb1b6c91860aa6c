"""User strings in reports are text, never markup: an arm name with markdown, mathtext, shell,
path, right-to-left or emoji characters reaches report.md, the figures and the leaderboard as
written; a name no report can show as itself (control characters) is refused at load."""

import html
import re
import subprocess

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from harness.names import unshowable
from harness.report.escape import (
    code_span,
    literal_figure_text,
    literal_legend,
    markdown_lines,
    markdown_table,
    markdown_text,
)
from tests import warm

# one name per character class a name may draw from
NASTY_NAMES = {
    "mathtext": "cost_$ vs ^$ price",
    "markdown": "a | b *c* _d_ `e` [f](g) <h> ~~i~~ &amp; \\",
    "shell": "$(rm -rf ~); `id` && echo 'x' > \"y\"",
    "path": "../../etc/passwd/..\\..\\x",
    "rtl": "نسخة עברית mixed",
    "emoji": "🚀 fast 👩‍💻 arm",
}
CONTROL_NAMES = ["bell\a", "line\nbreak", "nul\x00", "bidi \u202egnp.exe", "esc \x1b[31mred", "a\u200bb", " padded",
                 "   "]

showable_names = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.text(alphabet="ab1_*`~ .$|\\[]<&é", min_size=1, max_size=20),  # dense in markdown's punctuation
).filter(lambda name: name.strip() and unshowable(name) is None)


def _cell_text(rendered_html: str) -> str:
    return html.unescape(re.search(r"<td[^>]*>(.*?)</td>", rendered_html, re.S).group(1))


@settings(max_examples=300, deadline=None)
@given(showable_names)
def test_a_name_in_a_markdown_table_renders_as_itself(name):
    table = markdown_table(pd.DataFrame({"arm": [name], "seeds": ["2/2"]}), ("arm",))
    assert len(table.splitlines()) == 3  # the name broke no row
    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(table)
    assert _cell_text(rendered) == name.strip()


@settings(max_examples=300, deadline=None)
@given(showable_names)
def test_a_name_in_markdown_text_and_code_renders_as_itself(name):
    markdown = MarkdownIt("commonmark").enable("strikethrough")
    one_line = " ".join(name.split())
    assert html.unescape(re.sub("<[^>]+>", "", markdown.render(f"x {markdown_text(name)}"))).strip() == ("x " + name).strip()
    code = re.search(r"<code>(.*?)</code>", markdown.render(f"x {code_span(name)}"), re.S).group(1)
    assert " ".join(html.unescape(code).split()) == one_line


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="#-+=>*_1.) ab`<|", max_size=12), min_size=1, max_size=6))
def test_a_description_renders_as_its_own_text_never_as_blocks(lines):
    """A description's line starting with `#`, `- `, `1.` or a `---` under a line opened a
    heading or a list in report.md."""
    rendered = MarkdownIt("commonmark").render(markdown_lines("\n".join(lines)))
    assert set(re.findall(r"<(\w+)", rendered)) <= {"p"}, rendered
    text = html.unescape(re.sub("<[^>]+>", "", rendered))
    assert text.split() == "\n".join(lines).split()


@settings(max_examples=60, deadline=None)
@given(showable_names)
def test_a_name_in_a_figure_is_drawn_as_written(name):
    with literal_figure_text():
        figure, axes = plt.subplots()
        line, = axes.plot([0, 1], [0, 1])
        axes.set_xticks([0, 1], [name, "baseline"])
        literal_legend(axes, [(line, name)])
        legend = axes.get_legend()
        figure.canvas.draw()  # mathtext would raise here
        assert legend.get_texts()[0].get_text() == name
        plt.close(figure)


@pytest.mark.parametrize("name", CONTROL_NAMES, ids=repr)
def test_a_name_no_report_can_show_is_refused_at_load_naming_the_character(tmp_path, name):
    (tmp_path / "study.yaml").write_text(STUDY.replace("cost_$ vs ^$ price", name.encode("unicode_escape").decode()))
    result = subprocess.run([*warm.command(), "run", "study.yaml", "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "U+" in result.stderr or "white space" in result.stderr, result.stderr


STUDY = """
name: names
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 20, batch_size: 8, eval_interval: 10}
data: {dataset: pydoc, tokenizer: char}
arms:
  - name: baseline
  - name: "cost_$ vs ^$ price"
    set: {model.norm: rmsnorm}
seeds: 2
"""


def test_nasty_names_go_through_run_report_and_leaderboard(tmp_path):
    """The issue's study, then one study with a name of every class: all train, report and rank."""
    arms = "".join(f"  - name: {yaml_quoted(name)}\n    set: {{model.norm: rmsnorm, train.lr: {1e-3 * (i + 2)}}}\n"
                   for i, name in enumerate(NASTY_NAMES.values()))
    (tmp_path / "names.yaml").write_text(STUDY)
    (tmp_path / "classes.yaml").write_text(STUDY.replace("name: names", "name: classes").split("arms:")[0]
                                           + "arms:\n  - name: baseline\n" + arms + "seeds: 2\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for study in ("names", "classes"):
        run = subprocess.run([*warm.command(), "run", f"{study}.yaml", "--tracking-uri", uri], cwd=tmp_path,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr
        report = (tmp_path / "reports" / study / "report.md").read_text()
        assert {"curves.png", "final_loss.png"} <= {p.name for p in (tmp_path / "reports" / study).iterdir()}
        again = subprocess.run([*warm.command(), "report", study, "--tracking-uri", uri], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        rendered = html.unescape(MarkdownIt("commonmark").enable("table").render(report))
        names = [NASTY_NAMES["mathtext"]] if study == "names" else NASTY_NAMES.values()
        for name in names:
            assert f"<td>{name}</td>" in rendered.replace(' style="text-align:left"', ""), name
    board = subprocess.run([*warm.command(), "leaderboard", "--tracking-uri", uri], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert board.returncode == 0, board.stderr
    leaderboard = html.unescape(MarkdownIt("commonmark").enable("table").render(
        (tmp_path / "reports" / "leaderboard.md").read_text())).replace(' style="text-align:left"', "")
    for name in [NASTY_NAMES["mathtext"], *NASTY_NAMES.values()]:
        assert f"<td>{name}</td>" in leaderboard, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.yaml", "mlflow.db", "mlruns", "names.yaml",
                                                           "optuna.db", "reports", "runs"], "a name wrote outside its folders"


def yaml_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("name", ["a/../../..", "gelu swap", "", "-flag", "x" * 101, "rms\u202enorm"], ids=repr)
def test_a_variant_name_that_is_not_a_name_is_refused_at_registration(name):
    from harness.errors import AblateError
    from harness.registry import register

    with pytest.raises(AblateError, match="is not a name"):
        register("norm", name)
