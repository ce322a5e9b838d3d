"""A real browser on a hostile page must not make `pdd-serve` work: headless Debian `chromium` opens a page from another
origin (a second server on 127.0.0.1, another port) that fires the requests any web page may send without asking —
text/plain and form POSTs (no preflight) and a JSON fetch (preflighted) — and then a page under a rebound host name
(`--host-resolver-rules` maps it to the server, as DNS rebinding would). The server computes nothing for any of them."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

EVIL_PAGE = """<!doctype html><html><body><iframe name="sink"></iframe>
<form id="form" method="POST" action="TARGET/api/generate" target="sink" enctype="text/plain">
<input name='{"seed": 7, "x": "' value='"}'></form>
<script>
window.results = {};
(async () => {
  for (let i = 0; i < 3; i++) {
    try {  // a "simple" request: no preflight, the browser sends it and only hides the answer
      await fetch("TARGET/api/generate", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                                          body: JSON.stringify({seed: i})});
      results["simple" + i] = "sent";
    } catch (e) { results["simple" + i] = "blocked: " + e; }
  }
  try {  // preflighted: the server never approves it, so the POST itself must not be sent
    const r = await fetch("TARGET/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify({seed: 9})});
    results.json = "answered " + r.status;
  } catch (e) { results.json = "blocked"; }
  document.getElementById("form").submit();
  await new Promise(resolve => setTimeout(resolve, 1500));
  window.done = true;
})();
</script></body></html>"""


def _get(port: int, path: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    data = json.loads(connection.getresponse().read())
    connection.close()
    return data


@pytest.fixture
def served_port(tiny_engine: Path, free_port: int) -> Iterator[int]:
    command = [sys.executable, "-m", "pdd.runtime.cli_serve", "--engine", str(tiny_engine), "--port", str(free_port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None and "listening on" in process.stderr.readline()
        yield free_port
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def evil_origin(served_port: int) -> Iterator[str]:
    """Another origin on loopback (another port) serving the hostile page aimed at the pdd-serve port."""
    page = EVIL_PAGE.replace("TARGET", f"http://127.0.0.1:{served_port}").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _browser(cdp: Any, *extra: str) -> Any:
    executable = cdp.find_browser()
    if executable is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's)")
    try:
        return cdp.Browser(executable, extra_args=extra)
    except cdp.CdpError as exc:  # pragma: no cover - a machine whose chromium cannot start
        pytest.skip(f"chromium did not start here: {exc}")


def test_a_page_of_another_origin_cannot_generate(cdp: Any, served_port: int, evil_origin: str) -> None:
    browser = _browser(cdp)
    try:
        browser.open(evil_origin)
        browser.wait_for("window.done === true", timeout=60)
        results = browser.evaluate("window.results")
    finally:
        browser.close()
    assert results["json"] == "blocked", results  # the preflight is never approved
    time.sleep(0.5)
    health = _get(served_port, "/api/health")
    assert health["requests_served"] == 0 and health["in_flight"] == 0 and health["failed"] == 0, (results, health)


def test_a_rebound_host_name_gets_no_page_and_no_audio(cdp: Any, served_port: int) -> None:
    browser = _browser(cdp, "--host-resolver-rules=MAP rebound.example 127.0.0.1")
    try:
        browser.open(f"http://rebound.example:{served_port}/")
        text = browser.wait_for("document.body && document.body.innerText", timeout=30)
        answer = browser.evaluate("""fetch('/api/generate', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                     body: '{"seed": 1}'}).then(r => r.status)""")
    finally:
        browser.close()
    assert "not this server's name" in text and answer == 403
    assert _get(served_port, "/api/health")["requests_served"] == 0
