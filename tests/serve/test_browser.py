"""A real browser on the page: headless Debian `chromium` loads it from `pdd-serve` on 127.0.0.1, clicks Generate, and
the audio element gets a playable WAV (the server's bytes for that seed) and the spectrogram canvas is drawn."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest



@pytest.fixture
def page_url(tiny_engine: Path, free_port: int) -> Iterator[str]:
    command = [sys.executable, "-m", "pdd.runtime.cli_serve", "--engine", str(tiny_engine), "--port", str(free_port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None and "listening on" in process.stderr.readline()
        yield f"http://127.0.0.1:{free_port}/"
    finally:
        process.terminate()
        process.wait(30)


def server_bytes(url: str, seed: int) -> bytes:
    host, port = url.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/api/generate", json.dumps({"seed": seed}), {"Content-Type": "application/json"})
    body = connection.getresponse().read()
    connection.close()
    return body


AUDIO_FACTS = """(async () => {
  const player = document.getElementById('player');
  const bytes = new Uint8Array(await (await fetch(player.src)).arrayBuffer());
  return {src: player.src.slice(0, 5), error: player.error && player.error.code, ready: player.readyState,
          duration: player.duration, head: String.fromCharCode(...bytes.slice(0, 4), ...bytes.slice(8, 12)),
          bytes: Array.from(bytes), seed: Number(document.getElementById('seed').value),
          download: document.getElementById('download').download, state: document.body.dataset.state,
          status: document.getElementById('status').textContent};
})()"""

CANVAS_FACTS = """(() => {
  const canvas = document.getElementById('spectrogram');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  return {drawn: canvas.dataset.drawn, lit: lit / (data.length / 4), colours: colours.size};
})()"""


def test_generate_in_a_real_browser(cdp: Any, page_url: str, tmp_path: Path) -> None:
    if cdp.find_browser() is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's)")
    try:
        browser = cdp.generate_and_capture(page_url, tmp_path / "serve.png")
    except cdp.CdpError as exc:
        if "exited" in str(exc) or "timed out waiting for the browser" in str(exc):
            pytest.skip(f"chromium did not start here: {exc}")
        raise
    try:
        audio = browser.evaluate(AUDIO_FACTS)
        canvas = browser.evaluate(CANVAS_FACTS)
    finally:
        browser.close()
    assert audio["state"] == "done", audio["status"]
    assert audio["src"] == "blob:" and audio["error"] is None
    assert audio["ready"] >= 1 and 1.0 < audio["duration"] < 2.0  # the tiny engine's clip: 24320 samples at 16 kHz
    assert audio["head"] == "RIFFWAVE" and audio["download"] == f"pdd-{audio['seed']}-0.wav"
    assert bytes(audio["bytes"]) == server_bytes(page_url, audio["seed"])  # what the page plays is that seed's clip
    assert canvas["drawn"] == "1" and canvas["lit"] > 0.2 and canvas["colours"] > 50
    shot = (tmp_path / "serve.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
