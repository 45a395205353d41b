"""The live notebook as a student meets it: JupyterLab in a real browser (Debian's Chromium, driven
by Playwright), on the "Rust (hw9)" kernel. A training cell's progress line changes while it runs,
a figure shows inline, the stop button (the `I, I` shortcut, the same command as the toolbar's
square) stops the training, and a variable defined before is still there.

The notebook is written into a temporary folder; nothing under notebooks/ is opened or written.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import nbrun
import pytest
from conftest import ROOT
from test_live_kernel import DEP, TRAIN

CHROMIUM = "/usr/lib/chromium/chromium"  # Debian's binary (/usr/bin/chromium is a wrapper script)
KERNEL_INFO_REPLY = re.compile(r'"msg_type":\s*"kernel_info_reply"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab serving `tmp_path` on a free port; yields (base url, token, folder)."""
    port, token = free_port(), "hw9-live-lab-test"
    env = dict(os.environ, JUPYTER_PATH=str(ROOT / "jupyter"))
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        yield base, token, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def write_notebook(folder) -> str:
    cells = [
        DEP + "\n" + TRAIN + "\nuse hw9::prelude::*;",
        "let kept = 41;",
        'LineChart::new("a figure").series("loss", &[1.0, 0.5, 0.3, 0.2])',
        'let steps = train(400, "")?;',
        "kept + 1",
    ]
    nb = nbrun.code_notebook(*cells)
    nbformat.write(nb, folder / "live.ipynb")
    return "live.ipynb"


def test_in_jupyterlab_training_moves_a_figure_shows_and_the_stop_button_keeps_variables(lab):
    from playwright.sync_api import sync_playwright

    base, token, folder = lab
    name = write_notebook(folder)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # JupyterLab shows the kernel "idle" (the server's word) before its own connection to the
        # kernel has exchanged kernel_info; a Shift+Enter in that window is silently dropped by
        # JupyterLab (seen on a first start, 1 run in 4). Wait for the reply on the channels socket.
        kernel_ready = []

        def received(frame: str | bytes):
            text = frame.decode("latin-1") if isinstance(frame, bytes) else frame  # (binary protocol)
            if KERNEL_INFO_REPLY.search(text):
                kernel_ready.append(1)

        def watch(ws):
            if "/channels" in ws.url:
                ws.on("framereceived", received)

        page.on("websocket", watch)
        page.goto(f"{base}/lab/tree/{name}?token={token}")
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        cells.first.wait_for(timeout=120_000)
        deadline = time.monotonic() + 120
        while not kernel_ready and time.monotonic() < deadline:
            page.wait_for_timeout(100)  # (lets Playwright deliver the socket's events)
        assert kernel_ready, "JupyterLab's kernel connection sent no kernel_info_reply in 120 s"
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)

        def prompt(i: int) -> str:
            return cells.nth(i).locator(".jp-InputArea-prompt").inner_text().strip()

        def page_state(i: int, what: str) -> str:
            shot = folder / f"cell-{i}.png"
            page.screenshot(path=str(shot), full_page=True)
            dialogs = page.locator(".jp-Dialog").all_inner_texts()
            toasts = page.locator(".Toastify__toast").all_inner_texts()
            status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
            log = (folder / "lab.log").read_text()[-3000:]
            return (f"cell {i} {what} (prompt {prompt(i)!r}, kernel {status!r}); dialogs {dialogs}; "
                    f"notifications {toasts}; the page: {shot}\nJupyterLab's log:\n{log}")  # fmt: skip

        def run(i: int, timeout: float):
            cells.nth(i).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            started, deadline = False, time.monotonic() + timeout
            while time.monotonic() < deadline:
                now = prompt(i)
                if now not in ("[ ]:", "[*]:", ""):
                    return
                started = started or now == "[*]:"
                if not started and time.monotonic() > deadline - timeout + 30:
                    pytest.fail(page_state(i, "never started in 30 s after Shift+Enter"))
                time.sleep(0.2)
            pytest.fail(page_state(i, f"did not finish in {timeout} s"))

        def output(i: int) -> str:
            return cells.nth(i).locator(".jp-OutputArea").inner_text()

        run(0, 600)  # builds hw9 in the kernel (warm: seconds)
        run(1, 120)
        run(2, 120)
        assert cells.nth(2).locator(".jp-OutputArea img").count() == 1, output(2)

        # The training cell: watch its output change while it runs, then press the stop button.
        cells.nth(3).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        seen, t0 = [], time.monotonic()
        while time.monotonic() - t0 < 60 and len(set(seen)) < 4:
            text = output(3)
            if "slow demo" in text and (not seen or seen[-1] != text):
                seen.append(text)
            time.sleep(0.2)
        assert len(set(seen)) >= 4, seen  # the first drawing and at least three changes
        assert prompt(3) == "[*]:", "the cell ended before the stop button was pressed"
        page.keyboard.press("Escape")
        page.keyboard.press("i")
        page.keyboard.press("i")
        pressed = time.monotonic()
        while prompt(3) == "[*]:" and time.monotonic() - pressed < 30:
            time.sleep(0.2)
        stopped = time.monotonic() - pressed
        assert stopped < 5.0, f"the cell still ran {stopped:.1f} s after the stop button"
        assert "stopped by the interrupt" in output(3), output(3)
        # One progress display, not a redraw per step.
        assert cells.nth(3).locator(".jp-OutputArea-output").count() <= 3, output(3)

        run(4, 120)
        assert "42" in output(4), output(4)
        # Saved, the training cell keeps its progress display's last state, not a redraw per step.
        before = (folder / name).stat().st_mtime_ns
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while (folder / name).stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.2)
        browser.close()
    saved = nbformat.read(folder / name, as_version=4).cells[3].outputs
    assert len(saved) <= 3, saved
    shown = [o for o in saved if o.output_type == "display_data"]
    assert len(shown) == 1 and "slow demo" in shown[0].data["text/plain"], saved
    assert not any("\r" in o.get("text", "") for o in saved), saved
