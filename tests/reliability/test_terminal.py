"""On a terminal: the progress bars (a corpus being prepared, the study's runs) are drawn while
rich stands in for stderr, and the command ends. Everything else in the suite writes to pipes,
where no bar is live."""

import os
import pty
import re
import select
import subprocess
import time

from tests import warm

STUDY = """\
name: terminal
base:
  model: {n_layer: 1, d_model: 32, n_head: 2, context_length: 32}
  train: {steps: 4, batch_size: 4, eval_interval: 4}
grid:
  model.norm: [layernorm, rmsnorm]
seeds: 1
data: {dataset: {name: text, path: corpus.txt}, val_windows: 4}
"""


def _on_a_terminal(args, cwd, timeout=240) -> tuple[int | None, str]:
    """Run `ablate args` with a pseudo-terminal as its stdin, stdout and stderr (cold: the
    command is the process on the terminal); its exit status (None: still running at `timeout`,
    then killed) and what it wrote."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*warm.COLD, *args], cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal,
                               env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}, start_new_session=True)
    os.close(terminal)
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                output += os.read(controller, 1 << 16)
            except OSError:  # the terminal's other end closed: the command has ended
                break
        elif process.poll() is not None:
            break
    try:
        status = process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        status = None
    os.close(controller)
    return status, output.decode(errors="replace")


def test_a_study_on_a_terminal_prepares_a_large_corpus_trains_and_ends(tmp_path):
    line = "a line of the corpus that a terminal shows a progress bar for while it is read.\n"
    (tmp_path / "corpus.txt").write_text(line * (40_000_000 // len(line)))  # over the 32 MB of a bar
    (tmp_path / "study.yaml").write_text(STUDY)
    status, output = _on_a_terminal(["run", "study.yaml"], tmp_path)
    assert status == 0, output[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "reading text" in plain and "2 runs trained" in plain and "report:" in plain
