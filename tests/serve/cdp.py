"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (no websocket library, no Playwright):
headless Debian `chromium` reads NUL-terminated JSON commands on fd 3 and answers on fd 4.

Used by test_browser.py, and by hand to refresh the README screenshot against a running server:

    python tests/serve/cdp.py http://127.0.0.1:8000/ docs/serve.png
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHILD_IN, CHILD_OUT = 3, 4  # the fds Chrome's --remote-debugging-pipe uses


class CdpError(RuntimeError):
    pass


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Browser:
    """One headless browser process and one page target."""

    def __init__(self, executable: str, width: int = 1000, height: int = 900, extra_args: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="pdd-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds() -> None:  # in the child: our pipe ends become fds 3 and 4 (moved high first, so none clobbers)
            high_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_in, CHILD_IN)
            os.dup2(high_out, CHILD_OUT)

        command = [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", f"--user-data-dir={self.profile}",
                   f"--window-size={width},{height}", *extra_args, "about:blank"]
        self.process = subprocess.Popen(command, preexec_fn=wire_fds, pass_fds=(CHILD_IN, CHILD_OUT),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    # -- protocol -------------------------------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0,
             page: bool = True) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page and self.session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise CdpError(f"the browser exited: {self.stderr_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def stderr_tail(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read().decode(errors="replace")[-400:]

    # -- page -----------------------------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, page=False)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           timeout=timeout)
        if "exceptionDetails" in result:
            raise CdpError(f"page error: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CdpError:
                value = None  # the page is still navigating
            if value:
                return value
            time.sleep(0.1)
        raise CdpError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", page=False, timeout=5)
        except (CdpError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def generate_and_capture(url: str, screenshot: Path, button: str = "generate") -> Browser:
    """Open the page, click a Generate button, wait for the answer, screenshot; returns the (open) browser."""
    executable = find_browser()
    if executable is None:
        raise CdpError("no chromium on PATH")
    browser = Browser(executable)
    browser.open(url)
    browser.wait_for("document.body.dataset.state === 'ready'")
    browser.evaluate(f"document.getElementById({json.dumps(button)}).click()")
    browser.wait_for("['done', 'error'].includes(document.body.dataset.state)", timeout=120)
    browser.wait_for("document.getElementById('player').readyState >= 1 || document.getElementById('player').error")
    browser.screenshot(screenshot)
    return browser


if __name__ == "__main__":
    page_url, out = sys.argv[1], Path(sys.argv[2])
    opened = generate_and_capture(page_url, out, button=sys.argv[3] if len(sys.argv) > 3 else "generate4")
    opened.close()
    print(f"wrote {out}")
