"""The stages behind the service, each usable alone: which Sampler runs a request (`request_settings`, `SamplerPool`),
and when a batched model call may stand in for batch-1 calls (`BatchPolicy`, `run_rows`).

Exactness: a batched call is not bit-identical to batch-1 calls on every backend (measured: onnxruntime on 2 CPU threads
splits one clip's convolutions across threads at batch 1 but not at batch 2+, so x̂0 differs in the last bit, and
Griffin-Lim turns that into different PCM samples). `run_rows` therefore checks the first batched call of each stage,
settings and size against batch-1 calls and uses batched calls from then on only where every bit matched.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, Iterator

import numpy as np

from pdd.runtime.backends import Backend
from pdd.runtime.bundle import Bundle, finite_or_error
from pdd.runtime.errors import PddError
from pdd.runtime.sampler import AUTO, Sampler, SamplerSettings, resolve_settings


def request_settings(steps: int, vocoder: str) -> SamplerSettings:
    """A request names steps and a vocoder; the mode follows as for `Engine`: the fused graph at the bundle's N (which
    is what `pdd-run` runs by default), the denoiser loop otherwise."""
    return SamplerSettings(mode=AUTO, steps=steps, vocoder=vocoder)


def settings_problem(bundle: Bundle, device: str, steps: int, vocoder: str) -> str | None:
    """Why these settings cannot run on this bundle and device (one line), or None; opens nothing."""
    try:
        resolve_settings(bundle, request_settings(steps, vocoder), device)
    except PddError as exc:
        return str(exc)
    return None


def host_copy(backend: Backend, value: Any) -> np.ndarray:
    """A private host array: device values and bound output buffers are reused by the next run of their graph."""
    return np.array(backend.to_host(value), dtype=np.float32, copy=True)


class SamplerPool:
    """One `Sampler` per (steps, vocoder, batch size). On the CPU all share one backend (its sessions take any batch);
    on a GPU each batch size gets its own backend, because bound buffers and CUDA graphs are sized per batch."""

    def __init__(self, bundle: Bundle, open_backend: Callable[[], Backend]) -> None:
        self.bundle, self._open = bundle, open_backend
        self.primary = open_backend()
        self._backends: dict[int, Backend] = {1: self.primary}
        self._samplers: dict[tuple[Hashable, int], Sampler] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str], batch: int) -> Sampler:
        with self._lock:
            sampler = self._samplers.get((key, batch))
            if sampler is None:
                steps, vocoder = key
                backend = self._backend_for(batch)
                sampler = Sampler(self.bundle, backend, request_settings(steps, vocoder), batch)
                self._samplers[(key, batch)] = sampler
            return sampler

    def opened(self, key: tuple[int, str], batch: int) -> Sampler | None:
        """The sampler if it exists already. Never blocks: no lock (a dict read is atomic), no sessions opened."""
        return self._samplers.get((key, batch))

    def _backend_for(self, batch: int) -> Backend:
        if self.primary.device == "cpu" and not getattr(self.primary, "iobinding", None):
            return self.primary
        if batch not in self._backends:
            self._backends[batch] = self._open()
        return self._backends[batch]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()


class BatchPolicy:
    """Whether a batched call of a stage gives every clip the bits of its batch-1 call, per (stage, settings, size):
    True/False once measured, None before. With `exact` off, batching is always allowed."""

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self._verdicts: dict[tuple[str, Hashable, int], bool] = {}
        self._lock = threading.Lock()  # the sampler, vocoder and HTTP threads all read it

    def verdict(self, stage: str, key: Hashable, size: int) -> bool | None:
        with self._lock:
            return True if not self.exact else self._verdicts.get((stage, key, size))

    def verdicts(self, stage: str, key: Hashable) -> list[bool]:
        """Every size measured so far for this stage and key."""
        with self._lock:
            return [ok for (s, k, _), ok in self._verdicts.items() if s == stage and k == key]

    def record(self, stage: str, key: Hashable, size: int, identical: bool) -> None:
        with self._lock:
            self._verdicts[(stage, key, size)] = identical

    def summary(self) -> dict[str, bool]:
        with self._lock:
            items = sorted(self._verdicts.items(), key=str)
        return {f"{stage} {key} x{size}": ok for (stage, key, size), ok in items}


def run_rows(
    stage: str, key: Hashable, rows: list[tuple[np.ndarray, ...]], policy: BatchPolicy,
    single: Callable[..., np.ndarray], batched: Callable[..., np.ndarray] | None,
) -> tuple[list[np.ndarray], bool]:
    """Run `single` per row (each row: batch-1 arrays) or `batched` once on the rows stacked, as `policy` allows;
    returns one batch-1 result per row and whether the batched call's results were used."""
    verdict = policy.verdict(stage, key, len(rows)) if batched is not None and len(rows) > 1 else False
    if verdict is False:
        return [single(*row) for row in rows], False
    stacked = batched(*(np.concatenate(parts) for parts in zip(*rows)))  # type: ignore[misc]
    split = [stacked[i : i + 1] for i in range(len(rows))]
    if verdict is None:
        reference = [single(*row) for row in rows]
        policy.record(stage, key, len(rows), all(np.array_equal(a, b) for a, b in zip(split, reference)))
        return reference, False
    return split, True


def decoder(sampler: Sampler) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`sampler`'s decode with the finiteness check `Sampler.__call__` applies."""
    return lambda x0, phase: finite_or_error(np.asarray(sampler.decode(x0, phase), dtype=np.float32), "the vocoder")


def decode_each(sampler: Sampler, rows: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, float]]:
    decode = decoder(sampler)
    for x0, phase in rows:
        start = time.perf_counter()
        wave = decode(x0, phase)
        yield wave, (time.perf_counter() - start) * 1e3
