"""Notebook 00 in a real browser: JupyterLab + Chromium, Run All, then move the slice browser's slider.

What papermill and nbval cannot see: that the widgets render in JupyterLab, and that moving the slider redraws
the slice. Set-up (see shared/BROWSER_TESTING.md): a JupyterLab 4 server on 127.0.0.1 with its own config,
settings and runtime folders (no news pop-up, no autosave, every cell rendered), serving a temporary copy of
the notebook; the kernel inherits ``HEMOLAB_PROFILE=tiny`` and the test session's workspace. Driven by the
``playwright`` package with Debian's Chromium (``apt-get install chromium``); skipped, saying why, where
Chromium or playwright is missing.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "00_head_ct_and_haemorrhage.ipynb"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]  # fmt: skip
#: JupyterLab user settings for a quiet, deterministic test page.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _chromium() -> str | None:
    for candidate in (os.environ.get("HEMOLAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):  # fmt: skip
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - localhost only
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set HEMOLAB_CHROMIUM to its path)")
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
    )
    return path


@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory, tiny_cohort):
    """A JupyterLab server serving a copy of notebook 00; yields (base URL, token)."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    settings = base / "settings"
    for name, value in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "HEMOLAB_PROFILE": "tiny",
        # the session's workspace, where the tiny cohort already is (the kernel inherits this environment)
        "HEMOLAB_WORKSPACE": str(Path(tiny_cohort).parents[1]),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(base / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited ({proc.returncode}):\n{(base / 'server.log').read_text()[-3000:]}"
                )
            try:
                _get(f"{url}/api/status?token={token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in 60 s:\n{(base / 'server.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _stable_shot(locator, timeout: float = 20.0) -> bytes:
    """A screenshot of ``locator`` once two consecutive shots agree (the image is replaced on every update)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            shot = locator.screenshot(timeout=5000)
        except Exception:  # the element was replaced while being shot: try again
            last = None
            time.sleep(0.2)
            continue
        if shot == last:
            return shot
        last = shot
        time.sleep(0.3)
    raise AssertionError("the slice image never settled")


def _changed_fraction(a: bytes, b: bytes) -> float:
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(io.BytesIO(a)).convert("L"), dtype=np.int16)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("L"), dtype=np.int16)
    if x.shape != y.shape:
        return 1.0
    return float((np.abs(x - y) > 8).mean())


def test_slice_browser_renders_and_its_slider_changes_the_image(lab, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=60_000)
            page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
            page.wait_for_function(  # the kernel has started
                "() => (document.querySelector('#jp-main-statusbar')?.textContent || '').includes('Idle')",
                timeout=60_000,
            )
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            viewer = page.locator(".hemolab-slice-browser").first
            viewer.wait_for(state="visible", timeout=120_000)
            image = viewer.locator("img").first
            image.wait_for(state="visible", timeout=30_000)
            # let Run All finish: no cell still waiting ("[*]")
            page.wait_for_function(
                "() => ![...document.querySelectorAll('.jp-InputArea-prompt')]"
                ".some(p => p.textContent.includes('*'))",
                timeout=120_000,
            )
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, f"a cell failed in the browser:\n{tracebacks[0][:2000]}"

            readout = viewer.locator(".hemolab-slice-slider .widget-readout").first
            start = int(readout.inner_text())
            before = _stable_shot(image)
            handle = viewer.locator(".hemolab-slice-slider .noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            page.wait_for_function(
                "([el, v]) => parseInt(el.textContent) !== v",
                arg=[readout.element_handle(), start],
                timeout=10_000,
            )
            moved = int(readout.inner_text())
            assert moved != start
            # the kernel re-renders the slice: wait until the image differs, then until it settles
            deadline = time.monotonic() + 30
            after = before
            while time.monotonic() < deadline and _changed_fraction(before, after) <= 0.005:
                time.sleep(0.3)
                after = _stable_shot(image)
            (tmp_path / "slice_before.png").write_bytes(before)
            (tmp_path / "slice_after.png").write_bytes(after)
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            changed = _changed_fraction(before, after)
            print(f"slice {start} -> {moved}: {changed:.1%} of the pixels changed (shots in {tmp_path})")
            assert changed > 0.005, (
                f"slice {start} -> {moved}: only {changed:.2%} of the image's pixels changed"
            )
        except Exception:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
            print(f"screenshot of the page: {tmp_path / 'jupyterlab.png'}")
            raise
        finally:
            browser.close()
