"""The engine behind `pdd-serve`: admission, batching, a sampler thread and a vocoder thread, audio bytes out.

Flow: `submit(request)` admits a job (at most `max_queue` unfinished, else `Unavailable` → 503) → the `Batcher` groups
jobs with the same steps/vocoder → the sampler thread draws each clip's noise and start phase from its own seed
(`NoiseStream(seed)`, clip 0, exactly what `pdd-run --seed S -n 1` draws) and runs the denoiser → the vocoder thread
decodes, applies the peak guard and encodes in memory with the runtime's encoder → the job's future gets a `Clip`. With
`pipeline` the two stages run on separate threads, so group k+1 samples while group k decodes.

Batching never changes a clip's bytes: in `exact` mode (the default) a batched model call is used only where it was
checked to give every clip the bits of its batch-1 call (see `stages`); `exact=False` always batches (faster where
batching changes the last bits, the same music to the ear, not the same bytes as `pdd-run`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterator

import numpy as np

from pdd.runtime import __version__
from pdd.runtime.audio import WRITE_FORMATS, encode_audio, peak_guard
from pdd.runtime.backends import create_backend
from pdd.runtime.bundle import Bundle
from pdd.runtime.engine import load_engine_bundle
from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.sampler import VOCODERS, NoiseStream, Sampler, offered_steps
from pdd.runtime.serve.batcher import Batcher
from pdd.runtime.serve.schema import EngineChoices, GenerateRequest
from pdd.runtime.serve.stages import BatchPolicy, SamplerPool, decode_each, decoder, host_copy, run_rows, settings_problem
from pdd.runtime.untrusted import printable

MAX_BATCH_LIMIT = 64
MAX_QUEUE_LIMIT = 10_000
MAX_DECODERS = 16
MAX_WAIT_MS_LIMIT = 10_000.0
RETRY_AFTER_MAX_S = 60
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}
SUBTYPE = "pcm16"  # pdd-run's default sample format: the bytes match `pdd-run` without --float


@dataclass
class ServeOptions:
    engine: Path | None = None  # None: the shipped default engine
    backend: str = "auto"
    device: str = "auto"
    max_batch: int = 4
    max_wait_ms: float = 20.0
    max_queue: int = 32
    pipeline: bool = True
    decoders: int = 1  # vocoder threads (with pipeline): clips decode in parallel where cores are idle
    exact: bool = True

    def check(self) -> None:
        if not 1 <= self.max_batch <= MAX_BATCH_LIMIT:
            raise ConfigError(f"--max-batch must be in [1, {MAX_BATCH_LIMIT}], got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS_LIMIT or not math.isfinite(self.max_wait_ms):
            raise ConfigError(f"--max-wait-ms must be in [0, {MAX_WAIT_MS_LIMIT:g}], got {self.max_wait_ms}")
        if not 1 <= self.decoders <= MAX_DECODERS:
            raise ConfigError(f"--decoders must be in [1, {MAX_DECODERS}], got {self.decoders}")
        if not 1 <= self.max_queue <= MAX_QUEUE_LIMIT:
            raise ConfigError(f"--max-queue must be in [1, {MAX_QUEUE_LIMIT}], got {self.max_queue}")


class Unavailable(PddError):
    """The server cannot take the request now (queue full, shutting down): 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class Clip:
    audio: bytes
    media_type: str
    headers: dict[str, str]


@dataclass
class Job:
    request: GenerateRequest
    future: "Future[Clip]" = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def batch_key(self) -> Hashable:
        return self.request.settings_key


@dataclass
class SampledGroup:
    """What the sampler stage hands the vocoder stage: one x̂0 and start phase per job, batch 1 each."""

    jobs: list[Job]
    sampler: Sampler  # the batch-1 sampler of these settings (its decode is the one pdd-run -n 1 uses)
    x0: list[np.ndarray]
    phases: list[np.ndarray]
    started: float
    sample_ms: float
    model_batch: int  # clips per sampler call: len(jobs) when one batched call was used, else 1
    group_size: int  # requests the batcher grouped (a group sampled clip by clip is handed on one clip at a time)


class Service:
    """Load an engine, run the worker threads, answer `submit` with futures of `Clip`s."""

    def __init__(self, options: ServeOptions, *, bundle: Bundle | None = None) -> None:
        options.check()
        self.options = options
        self.bundle = bundle or load_engine_bundle(options.engine)
        self.pool = SamplerPool(self.bundle, lambda: create_backend(options.backend, self.bundle, device=options.device))
        if options.pipeline and options.decoders > 1 and self.pool.primary.device != "cpu":
            raise ConfigError("--decoders above 1 runs on the CPU only: GPU sessions reuse one set of bound buffers")
        self.choices = self._engine_choices()
        self.policy = BatchPolicy(options.exact)
        self.batcher: Batcher[Job] = Batcher(options.max_batch, options.max_wait_ms / 1e3)
        self._decode_queue: "queue.Queue[SampledGroup | None]" = queue.Queue(maxsize=2)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._in_flight = 0
        self._clip_seconds = 0.0  # moving average of wall time per clip, for Retry-After
        self.counts = {"served": 0, "failed": 0, "rejected": 0, "cancelled": 0, "groups": 0, "batched_calls": 0}
        self.started_at = time.time()

    # -- engine facts ---------------------------------------------------------------------------------------------
    def _engine_choices(self) -> EngineChoices:
        steps = offered_steps(self.bundle)
        if not steps:
            raise ConfigError(f"engine {printable(self.bundle.name)!r} has neither a sampler nor a denoiser graph")
        default = self.bundle.steps if self.bundle.steps in steps else steps[-1]
        device = self.pool.primary.device
        vocoders = tuple(v for v in VOCODERS if v == "auto" or settings_problem(self.bundle, device, default, v) is None)
        self.pool.get((default, "auto"), 1)  # the default settings' sessions open now; others on their first request
        return EngineChoices(default_steps=default, steps=steps, vocoders=vocoders, formats=tuple(WRITE_FORMATS))

    def engine_summary(self) -> dict[str, Any]:
        bundle, backend = self.bundle, self.pool.primary
        return {
            "name": printable(bundle.name, 120),
            "manifest_sha256": bundle.hash,
            "precision": printable(bundle.precision, 20),
            "sample_rate": bundle.audio.sample_rate,
            "clip_seconds": round(bundle.audio.clip_samples / bundle.audio.sample_rate, 4),
            "steps": {"default": self.choices.default_steps, "choices": list(self.choices.steps)},
            "vocoders": {"default": self.choices.default_vocoder, "choices": list(self.choices.vocoders)},
            "formats": list(self.choices.formats),
            "backend": printable(backend.describe(), 200),
            "device": backend.device,
            "serving": {"max_batch": self.options.max_batch, "max_wait_ms": self.options.max_wait_ms,
                        "max_queue": self.options.max_queue, "pipeline": self.options.pipeline,
                        "decoders": self.options.decoders if self.options.pipeline else 0,
                        "exact": self.options.exact},
            "pdd_version": __version__,
        }

    def health(self) -> dict[str, Any]:
        with self._lock:
            in_flight, counts = self._in_flight, dict(self.counts)
        alive = bool(self._threads) and all(t.is_alive() for t in self._threads)
        return {"ready": alive and not self._closing, "queue_depth": len(self.batcher), "in_flight": in_flight,
                "requests_served": counts["served"], **{k: v for k, v in counts.items() if k != "served"},
                "batch_exact": self.policy.summary(), "uptime_s": round(time.time() - self.started_at, 3)}

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._threads.append(threading.Thread(target=self._sampler_loop, name="pdd-sampler", daemon=True))
        if self.options.pipeline:
            for index in range(self.options.decoders):
                self._threads.append(threading.Thread(target=self._vocoder_loop, name=f"pdd-vocoder-{index}", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish every admitted one, stop the threads, release the backends."""
        with self._lock:
            self._closing = True
            self.batcher.close()
        for thread in self._threads:
            thread.join(timeout)
        self.pool.close()

    # -- admission ------------------------------------------------------------------------------------------------
    def submit(self, request: GenerateRequest) -> "Future[Clip]":
        with self._lock:
            if self._closing or not self._threads:
                raise Unavailable("the server is shutting down", retry_after_s=RETRY_AFTER_MAX_S)
            if self._in_flight >= self.options.max_queue:
                self.counts["rejected"] += 1
                raise Unavailable(f"the queue is full ({self.options.max_queue} requests); retry later",
                                  retry_after_s=self._retry_after_s())
            self._in_flight += 1
            job = Job(request)
            self.batcher.put(job)
        job.future.add_done_callback(self._finished)
        return job.future

    def _retry_after_s(self) -> int:
        estimate = self._in_flight * (self._clip_seconds or 1.0)
        return int(min(RETRY_AFTER_MAX_S, max(1, math.ceil(estimate))))

    def _finished(self, future: "Future[Clip]") -> None:
        outcome = "cancelled" if future.cancelled() else "served" if future.exception() is None else "failed"
        with self._lock:
            self._in_flight -= 1
            self.counts[outcome] += 1

    # -- stages ---------------------------------------------------------------------------------------------------
    def _sampler_loop(self) -> None:
        while (group := self.batcher.next_group(self._worth_waiting)) is not None:
            # A client that went away before its group started cancelled its future: skip it, compute nothing.
            group = [job for job in group if job.future.set_running_or_notify_cancel()]
            if not group:
                continue
            handed_on: set[int] = set()
            try:
                for sampled in self._sample(group):
                    handed_on.update(id(job) for job in sampled.jobs)
                    if self.options.pipeline:
                        self._decode_queue.put(sampled)
                    else:
                        self._finish(sampled)
            except Exception as exc:  # noqa: BLE001 - the jobs not handed on get the error; the thread keeps serving
                _fail([job for job in group if id(job) not in handed_on], exc)
        if self.options.pipeline:
            for _ in range(self.options.decoders):
                self._decode_queue.put(None)  # one end mark per vocoder thread

    def _vocoder_loop(self) -> None:
        while (sampled := self._decode_queue.get()) is not None:
            self._finish(sampled)

    def _worth_waiting(self, key: Hashable) -> bool:
        """Whether a group of `key` should wait for partners: always without `exact`; with it, until a batched call of
        this key was found to change bits and none was found exact (on such a backend a fuller group only delays)."""
        if not self.policy.exact:
            return True
        single = self.pool.opened(key, 1)  # called under the batcher's lock: never open sessions here
        if single is None:
            return True
        stages = ["sample", "decode"] if self._decode_batchable(single, 2) else ["sample"]
        return any(not verdicts or any(verdicts) for verdicts in (self.policy.verdicts(stage, key) for stage in stages))

    def _sample(self, group: list[Job]) -> Iterator[SampledGroup]:
        """x̂0 for a group: one batched call where allowed, else batch-1 calls, each clip handed on as soon as it is
        sampled (so the vocoder starts on clip 1 while clip 2 samples) unless the decode could use the whole group."""
        key, size = group[0].request.settings_key, len(group)
        single = self.pool.get(key, 1)
        streams = [NoiseStream(job.request.seed, self.bundle.packed_shape) for job in group]
        noise = [(s.take(1),) for s in streams]
        phases = [s.take_phase(1, single.phase_shape) for s in streams]
        self._count("groups")
        sample_one = lambda z: host_copy(single.backend, single.sample_x0(z))  # noqa: E731
        if self.policy.verdict("sample", key, size) is False and not self._decode_batchable(single, size):
            for job, (z,), phase in zip(group, noise, phases):
                started = time.perf_counter()
                x0 = sample_one(z)
                yield SampledGroup([job], single, [x0], [phase], started, (time.perf_counter() - started) * 1e3, 1, size)
            return

        def batched(z: np.ndarray) -> np.ndarray:
            wide = self.pool.get(key, size)
            return host_copy(wide.backend, wide.sample_x0(z))

        started = time.perf_counter()
        x0, used_batch = run_rows("sample", key, noise, self.policy, sample_one, batched)
        if used_batch:
            self._count("batched_calls")
        yield SampledGroup(group, single, x0, phases, started, (time.perf_counter() - started) * 1e3,
                           size if used_batch else 1, size)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _finish(self, sampled: SampledGroup) -> None:
        """Decode, encode and answer every clip of a group; one by one, so each answer leaves as soon as it is ready,
        unless a batched decode is allowed (see `_decode_batchable`)."""
        key, size, sampler = sampled.jobs[0].request.settings_key, len(sampled.jobs), sampled.sampler
        rows = list(zip(sampled.x0, sampled.phases))
        try:
            if self._decode_batchable(sampler, size):
                start = time.perf_counter()
                waves, _ = run_rows("decode", key, rows, self.policy, decoder(sampler), decoder(self.pool.get(key, size)))
                share = (time.perf_counter() - start) * 1e3 / size
                decoded: Iterator[tuple[np.ndarray, float]] = ((wave, share) for wave in waves)
            else:
                decoded = decode_each(sampler, rows)
            for job, (wave, decode_ms) in zip(sampled.jobs, decoded):
                self._answer(job, wave[0], sampled, decode_ms)
        except Exception as exc:  # noqa: BLE001 - the unanswered jobs get the error; the thread keeps serving
            _fail(sampled.jobs, exc)
        per_clip = (time.perf_counter() - sampled.started) / size
        with self._lock:
            self._clip_seconds = per_clip if not self._clip_seconds else 0.8 * self._clip_seconds + 0.2 * per_clip

    @staticmethod
    def _decode_batchable(sampler: Sampler, size: int) -> bool:
        """Numpy Griffin-Lim gains nothing from a batch (measured on the default engine: 4 clips 803 ms batched vs
        4 × 165 ms one by one); graph vocoders (GPU, learned) may, where the bits allow."""
        return size > 1 and sampler.vocoder_impl != "numpy"

    def _answer(self, job: Job, wave: np.ndarray, sampled: SampledGroup, decode_ms: float) -> None:
        try:
            job.future.set_result(self._clip(job, wave, sampled, decode_ms))
        except Exception as exc:  # noqa: BLE001
            _fail([job], exc)

    def _clip(self, job: Job, wave: np.ndarray, sampled: SampledGroup, decode_ms: float) -> Clip:
        encode_start = time.perf_counter()
        audio, gain_db = self._encode(wave, job.request.format)
        now = time.perf_counter()
        request, sampler = job.request, sampled.sampler
        headers = {
            "X-Pdd-Seed": str(request.seed),
            "X-Pdd-Steps": str(sampler.steps),
            "X-Pdd-Mode": sampler.mode,
            "X-Pdd-Vocoder": f"{sampler.vocoder}/{sampler.vocoder_impl}",
            "X-Pdd-Engine": header_text(self.bundle.name),
            "X-Pdd-Engine-Sha256": self.bundle.hash,
            "X-Pdd-Sample-Rate": str(self.bundle.audio.sample_rate),
            "X-Pdd-Seconds": f"{wave.shape[-1] / self.bundle.audio.sample_rate:.4f}",
            "X-Pdd-Peak-Guard-Db": f"{gain_db:.2f}",
            "X-Pdd-Group-Size": str(sampled.group_size),
            "X-Pdd-Model-Batch": str(sampled.model_batch),
            "X-Pdd-Queue-Ms": f"{(sampled.started - job.arrived) * 1e3:.1f}",
            "X-Pdd-Sample-Ms": f"{sampled.sample_ms / len(sampled.jobs):.1f}",  # this clip's share of its group
            "X-Pdd-Decode-Ms": f"{decode_ms:.1f}",
            "X-Pdd-Encode-Ms": f"{(now - encode_start) * 1e3:.1f}",
            "X-Pdd-Total-Ms": f"{(now - job.arrived) * 1e3:.1f}",
            "Content-Disposition": f'inline; filename="pdd-{request.seed}-0.{request.format}"',
        }
        return Clip(audio=audio, media_type=MEDIA_TYPES[request.format], headers=headers)

    def _encode(self, wave: np.ndarray, fmt: str) -> tuple[bytes, float]:
        """pdd-run's bytes: its peak guard, then the runtime's encoder (the one `write_audio` puts on disk), in memory."""
        wave, gain_db = peak_guard(wave)
        return encode_audio(wave, self.bundle.audio.sample_rate, fmt, subtype=SUBTYPE), gain_db


def header_text(text: str, limit: int = 120) -> str:
    """Untrusted text (a bundle name) as a header value: printable ASCII only, so it can neither break the header
    framing nor fail latin-1 encoding."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in printable(text, limit))
    return cleaned.strip() or "?"


def _fail(jobs: list[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
