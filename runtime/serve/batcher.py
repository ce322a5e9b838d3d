"""Dynamic batching: a queue that hands the sampler thread groups of requests that can share one model call.

A group starts with the oldest waiting job and takes the next jobs with the same settings key, up to `max_batch`,
waiting at most `max_wait_s` after its first job was taken for more to arrive. Jobs with other keys keep their place
in the queue (first come, first served across keys). Admission is bounded elsewhere (`Service.submit`); this queue only
orders.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, Hashable, Protocol, TypeVar


class Keyed(Protocol):
    @property
    def batch_key(self) -> Hashable: ...


J = TypeVar("J", bound=Keyed)


class Batcher(Generic[J]):
    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._jobs: deque[J] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, job: J) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._jobs.append(job)
            self._ready.notify_all()

    def close(self) -> None:
        """No more jobs; `next_group` drains what is queued (without waiting for groups to fill), then returns None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._jobs)

    def next_group(self, worth_waiting: Callable[[Hashable], bool] | None = None) -> list[J] | None:
        """Block until a job is queued; return it with up to max_batch - 1 more of its key. None once closed and empty.

        `worth_waiting(key)` False: take the jobs of that key already queued, but do not wait for more (the caller
        knows a fuller group would not be run as one call)."""
        with self._ready:
            while not self._jobs:
                if self._closed:
                    return None
                self._ready.wait()
            group = [self._jobs.popleft()]
            wait_s = self.max_wait_s if worth_waiting is None or worth_waiting(group[0].batch_key) else 0.0
            deadline = time.monotonic() + wait_s
            while True:
                self._take_same_key(group)
                left = deadline - time.monotonic()
                if len(group) >= self.max_batch or left <= 0 or self._closed:
                    return group
                self._ready.wait(left)

    def _take_same_key(self, group: list[J]) -> None:
        key = group[0].batch_key
        kept: deque[J] = deque()
        while self._jobs:
            job = self._jobs.popleft()
            if len(group) < self.max_batch and job.batch_key == key:
                group.append(job)
            else:
                kept.append(job)
        self._jobs = kept
