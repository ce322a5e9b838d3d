"""The HTTP API through the ASGI test clients, on the tiny bundle: valid and invalid requests, queue full, same seed →
`pdd-run`'s bytes (batched or not), shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, write_manifest
from pdd.runtime.generate import RunOptions, generate
from pdd.runtime.sampler import VOCODERS
from pdd.runtime.serve.app import create_app
from pdd.runtime.serve.schema import MAX_BODY_BYTES
from pdd.runtime.serve.service import ServeOptions, Service, Unavailable


JSON = {"content-type": "application/json"}


def pdd_run_bytes(engine: Path, out: Path, seed: int, **options: Any) -> bytes:
    """What `pdd-run --seed SEED -n 1 [options]` writes (the same library call the CLI makes)."""
    result = generate(RunOptions(engine=engine, n=1, seed=seed, out=out / f"run-{seed}", backend="ort", device="cpu",
                                 **options))
    return result[0].audio.read_bytes()


def post_all(service: Service, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST the bodies concurrently through the ASGI app (so the batcher sees them together)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await asyncio.gather(*(client.post("/api/generate", json=body) for body in bodies))

    service.start()  # ASGITransport runs no lifespan
    return asyncio.run(run())


def assert_json_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert fragment in error and "\n" not in error and "Traceback" not in response.text


def test_page_engine_and_health(make_service: Any, tiny_engine: Path) -> None:
    service = make_service()
    with TestClient(create_app(service), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        # Self-contained: nothing is loaded from another host (the machine may be offline).
        assert "<script src" not in page.text and "<link" not in page.text and "@import" not in page.text
        assert 'id="generate"' in page.text and "<audio" in page.text and "<canvas" in page.text

        engine = client.get("/api/engine").json()
        assert engine["name"] == "tiny-test" and engine["manifest_sha256"] == load_bundle(tiny_engine).hash
        assert engine["steps"] == {"default": 4, "choices": [1, 2, 4]}
        assert engine["vocoders"]["default"] == "auto" and set(engine["vocoders"]["choices"]) <= set(VOCODERS)
        assert {"gl", "graph"} <= set(engine["vocoders"]["choices"])  # resolved by Sampler's rules, no sessions opened
        assert engine["formats"] == ["wav", "flac"] and engine["device"] == "cpu"

        health = client.get("/api/health").json()
        assert health["ready"] is True and health["queue_depth"] == 0 and health["requests_served"] == 0


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_generate_returns_audio_with_headers(make_service: Any, tiny_engine: Path, fmt: str) -> None:
    service = make_service()
    with TestClient(create_app(service), base_url="http://localhost") as client:
        response = client.post("/api/generate", json={"seed": 5, "format": fmt})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"audio/{fmt}"
        wave, rate = sf.read(io.BytesIO(response.content), dtype="float32")
        bundle = load_bundle(tiny_engine)
        assert rate == 16000 and wave.shape == (bundle.audio.clip_samples,) and abs(wave).max() > 0
        h = response.headers
        assert (h["x-pdd-seed"], h["x-pdd-steps"], h["x-pdd-mode"]) == ("5", "4", "sampler")
        assert h["x-pdd-engine"] == "tiny-test" and h["x-pdd-engine-sha256"] == bundle.hash
        assert float(h["x-pdd-total-ms"]) >= float(h["x-pdd-decode-ms"]) >= 0
        assert client.get("/api/health").json()["requests_served"] == 1


def test_a_missing_seed_is_drawn_and_reported(make_service: Any) -> None:
    with TestClient(create_app(make_service()), base_url="http://localhost") as client:
        first, second = (client.post("/api/generate", content=b"", headers=JSON) for _ in range(2))
        assert first.status_code == second.status_code == 200
        assert first.headers["x-pdd-seed"] != second.headers["x-pdd-seed"]
        again = client.post("/api/generate", json={"seed": int(first.headers["x-pdd-seed"])})
        assert again.content == first.content


BAD_BODIES = [
    (b'{"seed": 7', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[7]", 400, "JSON object"),
    (b'{"seed": "7"}', 400, "seed must be an integer, got a string"),
    (b'{"seed": 1.5}', 400, "got a number"),
    (b'{"seed": true}', 400, "got a boolean"),
    (b'{"seed": -1}', 400, "seed must be in [0, "),
    (b'{"seed": 9223372036854775808}', 400, "seed must be in [0, "),
    (b'{"steps": "4"}', 400, "steps must be an integer"),
    (b'{"steps": 3}', 400, "steps 3 is not offered by this engine; choose one of: 1, 2, 4"),
    (b'{"steps": 0}', 400, "not offered"),
    (b'{"steps": 100000}', 400, "not offered"),
    (b'{"vocoder": "hifigan"}', 400, "unknown vocoder 'hifigan'"),
    (b'{"vocoder": 3}', 400, "vocoder must be a string"),
    (b'{"format": "mp3"}', 400, "unknown format 'mp3'; choose one of: wav, flac"),
    (b'{"seeds": 7}', 400, "unknown field 'seeds'"),
    (b'{"seed": ' + b"1" * 5000 + b"}", 413, f"larger than {MAX_BODY_BYTES} bytes"),
    (b"[" * 3000 + b"]" * 3000, 413, "larger than"),
    (b"[" * 2000 + b"]" * 2000, 400, "not valid JSON"),  # nesting deep enough to hit the recursion limit
]


@pytest.mark.parametrize("body,status,fragment", BAD_BODIES)
def test_bad_requests_get_one_json_error_line(make_service: Any, body: bytes, status: int, fragment: str) -> None:
    service = make_service()
    with TestClient(create_app(service), base_url="http://localhost") as client:
        assert_json_error(client.post("/api/generate", content=body, headers=JSON), status, fragment)
        health = client.get("/api/health").json()
        assert health["bad_requests"] == 1 and health["requests_served"] == 0 and health["failed"] == 0


def test_unknown_paths_and_methods_answer_json(make_service: Any) -> None:
    with TestClient(create_app(make_service()), base_url="http://localhost") as client:
        assert_json_error(client.get("/nope"), 404, "Not Found")
        assert_json_error(client.get("/api/generate"), 405, "Method Not Allowed")
        assert_json_error(client.get("/docs"), 404, "Not Found")  # no OpenAPI pages on the wire


def test_a_lying_content_length_is_refused(make_service: Any) -> None:
    with TestClient(create_app(make_service()), base_url="http://localhost") as client:
        response = client.post("/api/generate", content=b"{}", headers={**JSON, "content-length": str(MAX_BODY_BYTES + 1)})
        assert response.status_code in (400, 413) and "error" in response.json()


def test_batched_clips_are_pdd_runs_bytes(make_service: Any, tiny_engine: Path, tmp_path: Path) -> None:
    """Four seeds in one group, twice (the first group of a size also checks whether the batched call is bit-exact);
    every clip equals `pdd-run --seed S -n 1`, whatever the batch."""
    service = make_service(max_batch=4, max_wait_ms=2000)
    seeds = [3, 11, 12345, 2**40]
    expected = {s: pdd_run_bytes(tiny_engine, tmp_path, s) for s in seeds}
    for _ in range(2):
        responses = post_all(service, [{"seed": s} for s in seeds])
        for seed, response in zip(seeds, responses):
            assert response.status_code == 200, response.text
            assert response.headers["x-pdd-group-size"] == "4"
            assert response.content == expected[seed], f"seed {seed} differs from pdd-run"
    assert service.health()["batch_exact"] == {"sample (4, 'auto') x4": True}  # the tiny graphs batch exactly...
    assert response.headers["x-pdd-model-batch"] == "4"  # ...so the second group ran as one model call


@pytest.mark.parametrize("steps,options", [(2, {"mode": "loop", "steps": 2}), (4, {"vocoder": "graph"})])
def test_other_settings_match_pdd_run_too(make_service: Any, tiny_engine: Path, tmp_path: Path, steps: int,
                                          options: dict[str, Any]) -> None:
    service = make_service(max_batch=2, max_wait_ms=1000)
    vocoder = options.get("vocoder", "auto")
    responses = post_all(service, [{"seed": 21, "steps": steps, "vocoder": vocoder}, {"seed": 22, "steps": steps,
                                                                                      "vocoder": vocoder}])
    for seed, response in zip((21, 22), responses):
        assert response.status_code == 200, response.text
        assert response.headers["x-pdd-mode"] == options.get("mode", "sampler")
        assert response.content == pdd_run_bytes(tiny_engine, tmp_path, seed, **options)


def test_no_exact_batches_from_the_first_group(make_service: Any) -> None:
    service = make_service(max_batch=3, max_wait_ms=2000, exact=False)
    responses = post_all(service, [{"seed": s} for s in (1, 2, 3)])
    assert [r.headers["x-pdd-model-batch"] for r in responses] == ["3"] * 3


@pytest.mark.parametrize("pipeline,decoders", [(True, 1), (False, 1), (True, 3)])
def test_pipelined_or_not_the_answers_are_pdd_runs(make_service: Any, tiny_engine: Path, tmp_path: Path, pipeline: bool,
                                                   decoders: int) -> None:
    service = make_service(max_batch=2, max_wait_ms=5, pipeline=pipeline, decoders=decoders)
    responses = post_all(service, [{"seed": s % 3} for s in range(9)])
    expected = {str(seed): pdd_run_bytes(tiny_engine, tmp_path, seed) for seed in range(3)}
    for response in responses:
        assert response.status_code == 200
        assert response.content == expected[response.headers["x-pdd-seed"]]
    assert service.health()["requests_served"] == 9


def test_a_full_queue_answers_503_with_retry_after(make_service: Any) -> None:
    service = make_service(max_batch=2, max_wait_ms=1500, max_queue=1)

    async def run() -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            first = asyncio.create_task(client.post("/api/generate", json={"seed": 1}))
            while service.health()["in_flight"] == 0:  # admitted; it waits in the batcher for a partner
                await asyncio.sleep(0.01)
            second = await client.post("/api/generate", json={"seed": 2})
            return await first, second, (await client.get("/api/health")).json()

    service.start()
    first, second, health = asyncio.run(run())
    assert first.status_code == 200
    assert_json_error(second, 503, "queue is full (1 requests)")
    assert int(second.headers["retry-after"]) >= 1
    assert health["rejected"] == 1


def test_close_finishes_admitted_jobs_then_refuses(make_service: Any) -> None:
    service = make_service(max_batch=2, max_wait_ms=200)
    service.start()
    futures = [service.submit(_request(seed)) for seed in range(5)]
    service.close(timeout=60)
    assert all(f.done() and f.exception() is None for f in futures)
    assert len({f.result().audio for f in futures}) == 5
    with pytest.raises(Unavailable, match="shutting down"):
        service.submit(_request(9))
    assert service.health()["ready"] is False


def test_lifespan_shutdown_finishes_the_request_in_flight(make_service: Any) -> None:
    service = make_service(max_batch=2, max_wait_ms=800)
    with TestClient(create_app(service), base_url="http://localhost"):
        future = service.submit(_request(4))  # admitted, waiting for a partner when the app shuts down
    assert future.done() and future.result().audio[:4] == b"RIFF"
    assert service.health()["requests_served"] == 1


def _request(seed: int) -> Any:
    from pdd.runtime.serve.schema import GenerateRequest

    return GenerateRequest(seed=seed, steps=4, vocoder="auto", format="wav")


def test_where_batching_changes_bits_clips_stream_one_by_one_and_still_match(make_service: Any, tiny_engine: Path,
                                                                               tmp_path: Path) -> None:
    """The path a multi-threaded CPU backend takes (its batched call failed the bit check): batch-1 calls, each clip
    handed to the vocoder as soon as it is sampled, the same bytes as pdd-run."""
    service = make_service(max_batch=3, max_wait_ms=2000)
    service.policy.record("sample", (4, "auto"), 3, False)  # as if the first group of 3 had differed in the last bit
    seeds = [31, 32, 33]
    responses = post_all(service, [{"seed": s} for s in seeds])
    for seed, response in zip(seeds, responses):
        assert response.status_code == 200
        assert (response.headers["x-pdd-group-size"], response.headers["x-pdd-model-batch"]) == ("3", "1")
        assert response.content == pdd_run_bytes(tiny_engine, tmp_path, seed)
    assert service.health()["batched_calls"] == 0


def test_no_waiting_for_partners_once_batching_is_known_not_to_help(make_service: Any) -> None:
    service = make_service(max_batch=4, max_wait_ms=2500)
    post_all(service, [{"seed": 1}])  # opens the sampler for these settings
    service.policy.record("sample", (4, "auto"), 2, False)
    started = time.perf_counter()
    (response,) = post_all(service, [{"seed": 2}])
    assert response.status_code == 200 and time.perf_counter() - started < 2.0  # not the 2.5 s max wait
    assert float(response.headers["x-pdd-queue-ms"]) < 2000


def test_an_engine_failure_is_one_500_line_and_the_server_keeps_serving(tiny_engine: Path, tmp_path: Path) -> None:
    """A bundle whose weights are NaN (hashes re-pinned, so it loads): the answer is a 500 with one line, no trace."""
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny_engine, poisoned)
    weights = poisoned / "weights.data"
    weights.write_bytes(np.full(weights.stat().st_size // 4, np.nan, dtype=np.float32).tobytes())
    write_manifest(poisoned, json.loads((poisoned / MANIFEST_NAME).read_text()))
    service = Service(ServeOptions(engine=poisoned, backend="ort", device="cpu"))
    with TestClient(create_app(service), base_url="http://localhost") as client:
        assert_json_error(client.post("/api/generate", json={"seed": 1}), 500, "generation failed: the sampler produced NaN")
        assert_json_error(client.post("/api/generate", json={"seed": 2}), 500, "NaN/inf")
        health = client.get("/api/health").json()
        assert health["ready"] is True and health["failed"] == 2 and health["requests_served"] == 0
