"""Lesson 01 in a real browser: JupyterLab + headless Chromium, offline.

Starts ``jupyter lab`` on a free port with throwaway HOME and Jupyter
directories, opens a copy of ``notebooks/01_attention.ipynb``, runs all
cells, and checks that the attention explorer renders without errors, that
changing a control changes its figure, and that the static snapshot stays
hidden while the widget is live.  A screenshot is kept under
``$COURSE_ARTIFACTS`` (default: ``artifacts/`` at the repository root).

Needs Debian's chromium at /usr/bin/chromium and the ``playwright`` package
from PyPI; Playwright's own browser download is never used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_attention.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SERVER_START_S = 120  # generous: a loaded CI machine starts Lab in ~7 s, sometimes far more
KERNEL_START_MS = 120_000
RUN_ALL_MS = 420_000  # the whole notebook, model load included (about a minute on 2 quiet cores)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def artifacts_dir() -> Path:
    """Where screenshots go: $COURSE_ARTIFACTS, else artifacts/ at the repo root (gitignored)."""
    folder = Path(os.environ.get("COURSE_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throwaway_env(root: Path) -> dict[str, str]:
    """Environment for Lab and its kernels: private HOME and Jupyter dirs, no news toast, offline hub."""
    dirs = {
        name: root / name.lower()
        for name in (
            "HOME",
            "JUPYTER_CONFIG_DIR",
            "JUPYTER_DATA_DIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR",
            "IPYTHONDIR",
            "MPLCONFIGDIR",
        )
    }
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    settings = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, **{name: str(path) for name, path in dirs.items()}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("MPLBACKEND", None)  # conftest sets Agg for the tests; Lab's kernels draw inline, as a student's do
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab serving a folder with a copy of lesson 01: yields (url, token, folder)."""
    missing = [
        what
        for what, found in [
            (f"{CHROMIUM} (apt-get install -y chromium)", Path(CHROMIUM).exists()),
            ("playwright (pip install playwright; no browser download needed)", importlib.util.find_spec("playwright")),
        ]
        if not found
    ]
    if missing:
        message = f"browser test needs {' and '.join(missing)}; scripts/setup.sh --test installs both"
        if os.environ.get("CI"):  # CI installs both: missing there is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("lab")
    work = root / "work"
    work.mkdir()
    shutil.copy2(NOTEBOOK, work / NOTEBOOK.name)
    port, token = free_port(), uuid.uuid4().hex
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--allow-root",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={work}",
        "--ServerApp.open_browser=False",
    ]
    log = open(root / "lab.log", "w")  # noqa: SIM115 - closed in the teardown below
    server = subprocess.Popen(
        command, env=throwaway_env(root), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )  # own process group: teardown stops kernels too
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, token, server, root / "lab.log")
        yield url, token, work
    finally:
        stop(server)
        log.close()


def wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path) -> None:
    """Poll /api/status until Lab answers; fail with its log if it dies or never answers."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server and its kernels (its process group): SIGTERM, then SIGKILL."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def run_all_cells(page) -> None:
    """Run > Run All Cells, through the menu bar as a student would, once the kernel is idle.

    Clicking before the kernel session exists makes Lab ask which kernel to
    use; the dialog is accepted (the notebook's own python3) if it shows up.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(timeout=KERNEL_START_MS)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    try:
        select.click(timeout=3000)
    except PlaywrightTimeout:  # no dialog: the kernel was ready, the usual case
        pass


def test_lesson_01_explorer_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    url, token, _ = lab
    console_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?reset&token={token}")
            expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=120_000)
            run_all_cells(page)

            # The last code cell prints the redraw times once everything above it has run.
            done = page.locator(".jp-OutputArea-output", has_text="forward passes so far")
            expect(done).to_be_visible(timeout=RUN_ALL_MS)
            prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
            assert not [p for p in prompts if "*" in p], "some cells are still running"
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            errors = [text for text in outputs if "Traceback" in text or "Error displaying widget" in text]
            assert not errors, f"error outputs in the notebook: {errors[:2]}"

            explorer = page.locator(".course-attention-explorer")
            expect(explorer).to_be_visible()
            image = explorer.locator("img")
            expect(image).to_be_visible()
            assert image.evaluate("img => img.complete && img.naturalWidth > 100")
            snapshot = page.locator("[class^='course-static-']")
            assert snapshot.count() == 1 and not snapshot.is_visible(), (
                "the static snapshot must hide behind the live widget"
            )
            explorer.scroll_into_view_if_needed()
            before = image.screenshot()

            explorer.locator(".widget-toggle-button", has_text="lines").click()
            after = wait_for_new_picture(image, before)
            assert after != before, "changing the view did not change the figure"

            shots = artifacts_dir()
            page.screenshot(path=str(shots / "01_attention_lab.png"), full_page=False)
            explorer.screenshot(path=str(shots / "01_attention_explorer.png"))
        finally:
            browser.close()
    widget_errors = [e for e in console_errors if "widget" in e.lower() or "require" in e.lower()]
    assert not widget_errors, f"browser console errors about widgets: {widget_errors[:3]}"


def wait_for_new_picture(image, before: bytes, attempts: int = 60) -> bytes:
    """Screenshot the explorer's image until it differs from ``before`` (the kernel redraws asynchronously)."""
    shot = image.screenshot()
    for _ in range(attempts):
        if shot != before:
            return shot
        image.page.wait_for_timeout(500)
        shot = image.screenshot()
    return shot
