"""The MLflow UI in a real browser: `ablate ui` serves a finished study on loopback, and
Chromium (Debian's, driven by Playwright) finds the study's parent run with its children,
the chart of val_loss per run, the arm runs' mean curves and 95% bands, and the runs grouped
by arm. Screenshots are saved."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.tracking.ui import UI_VIEW
from tests import warm
from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
STUDY = """
name: ui_study
description: Pre-norm against post-norm, browsed in the MLflow UI.
base:
  model: {n_layer: 1, d_model: 16, n_head: 2, context_length: 16}
  train: {steps: 30, batch_size: 4, log_interval: 5, eval_interval: 10}
data: {val_windows: 4}
grid: {model.placement: [pre, post]}
seeds: 2
report: {baseline: pre}
"""
CHILDREN = ["pre seed=0", "post seed=0", "pre seed=1", "post seed=1"]
ARM_RUNS = ["pre (mean of 2 seeds)", "post (mean of 2 seeds)"]
# The charts fetch every run's history from a server that shares two cores with the rest of the
# suite; in CI a chart once took longer than 30 s to draw.
DRAWN_MS = 120_000


def _browser_or_skip():
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (.ci/run does)")
        pytest.skip("no /usr/bin/chromium: apt-get install chromium to run the MLflow UI test")
    return pytest.importorskip("playwright.sync_api")


def _outward_address() -> str | None:
    """This machine's address on its network, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished study, and `ablate ui` serving it: (base URL, experiment id, folder)."""
    folder = tmp_path_factory.mktemp("ui")
    (folder / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{folder}/mlflow.db"
    ran = subprocess.run([*warm.command(), "run", "study.yaml", "--tracking-uri", uri],
                         cwd=folder, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    port = free_port()
    # cold: the test signals the server's process group, which a warm command is not the leader of
    server = subprocess.Popen([*warm.COLD, "ui", "--port", str(port), "--tracking-uri", uri],
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    assert server.stdout.readline().startswith(f"MLflow UI on {base}/#/experiments?{UI_VIEW}")
    deadline = time.time() + 120
    while not _answers(f"{base}/health"):
        assert server.poll() is None and time.time() < deadline, server.communicate()[0]
        time.sleep(0.5)
    experiment = MlflowClient(uri).get_experiment_by_name("ui_study").experiment_id
    yield base, experiment, folder, port, server.pid
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def test_ablate_ui_listens_on_loopback_only(ui):
    base, _, _, port, _ = ui
    assert _answers(f"{base}/health")
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no address besides loopback to check against")
    assert not _answers(f"http://{outward}:{port}/health"), "ablate ui answers from the network"


def _session_commands(session: int) -> list[str]:
    """The command lines of the processes of a session (the server and what it started)."""
    commands = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # the session id, after state, ppid and process group
                commands.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            pass
    return commands


def test_ablate_ui_starts_no_job_runner(ui):
    """MLflow's job runner (GenAI evaluation jobs: about 8 processes of 200 MB) stays off."""
    *_, session = ui
    commands = _session_commands(session)
    assert any("mlflow" in command for command in commands), commands
    assert not [command for command in commands if "huey" in command or "mlflow.server.jobs" in command], commands


def test_the_study_browsed_in_chromium(ui):
    sync_api = _browser_or_skip()
    base, experiment, folder, _, _ = ui
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # the link `ablate ui` prints opens MLflow's model-training view, not its GenAI one
            page.goto(f"{base}/#/experiments/{experiment}?{UI_VIEW}", wait_until="domcontentloaded")
            parent = page.get_by_text("ui_study 20").first
            parent.wait_for(timeout=60_000)
            assert page.get_by_text(CHILDREN[0], exact=True).count() == 0  # nested under the parent
            if page.get_by_role("button", name="Close").count():
                page.get_by_role("button", name="Close").first.click()  # the assistant panel
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # expand the parent
            for child in CHILDREN + ARM_RUNS:
                page.get_by_text(child, exact=True).wait_for(timeout=DRAWN_MS)
            page.screenshot(path=folder / "mlflow-ui-runs.png")

            page.locator("label:has(input[value=CHART])").click()
            page.get_by_placeholder("Search metric charts").fill("val_loss")
            for child in CHILDREN:
                page.get_by_text(f"{child} (val_loss)", exact=True).wait_for(timeout=DRAWN_MS)
            page.screenshot(path=folder / "mlflow-ui-val-loss.png")

            # the arms as curves with bands: each arm run's mean and 95% interval at every step
            for metric in ("val_loss_ci_low", "val_loss_ci_high", "val_loss_mean"):  # one chart at a time in view
                page.get_by_placeholder("Search metric charts").fill(metric)
                for arm_run in ARM_RUNS:
                    page.get_by_text(f"{arm_run} ({metric})", exact=True).first.wait_for(timeout=DRAWN_MS)
            page.screenshot(path=folder / "mlflow-ui-arm-mean.png")
            page.get_by_placeholder("Search metric charts").fill("val_loss")

            page.get_by_role("button", name="Group by").click()
            page.locator("[role=menuitemcheckbox]", has_text="arm").first.click()
            page.keyboard.press("Escape")
            for arm in ("pre", "post"):
                page.get_by_text(f"Group: {arm}", exact=True).wait_for(timeout=DRAWN_MS)
                page.get_by_text(f"{arm} (val_loss)", exact=True).wait_for(timeout=DRAWN_MS)
            page.screenshot(path=folder / "mlflow-ui-by-arm.png")
        finally:
            browser.close()
    for name in ("mlflow-ui-runs.png", "mlflow-ui-val-loss.png", "mlflow-ui-arm-mean.png", "mlflow-ui-by-arm.png"):
        assert (folder / name).stat().st_size > 10_000
    print(f"screenshots in {folder}")


def test_ablate_ui_on_a_busy_port_says_so_instead_of_linking_another_server(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run([*warm.command(), "ui", "--port", str(port)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr and "MLflow UI on" not in result.stdout
