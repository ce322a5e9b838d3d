"""The batcher's grouping rules and the exactness check that decides when a batched model call may be used."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from pdd.runtime.serve.batcher import Batcher
from pdd.runtime.serve.stages import BatchPolicy, run_rows


@dataclass
class Item:
    name: str
    batch_key: str


def test_groups_take_same_key_jobs_up_to_max_batch_and_keep_the_rest_in_order() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=2, max_wait_s=0.0)
    for name, key in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a"), ("b2", "b")]:
        batcher.put(Item(name, key))
    groups = [[item.name for item in batcher.next_group() or []] for _ in range(3)]
    assert groups == [["a1", "a2"], ["b1", "b2"], ["a3"]]
    assert len(batcher) == 0


def test_a_group_waits_up_to_max_wait_for_partners() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=3, max_wait_s=2.0)
    batcher.put(Item("first", "k"))
    late = threading.Timer(0.05, lambda: batcher.put(Item("late", "k")))
    late.start()
    started = time.monotonic()
    group = batcher.next_group()
    late.join()
    assert group is not None and [i.name for i in group] == ["first", "late"]
    assert time.monotonic() - started >= 1.9  # the group was not full, so it waited out max_wait


def test_a_full_group_leaves_at_once() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=2, max_wait_s=30.0)
    batcher.put(Item("x", "k"))
    batcher.put(Item("y", "k"))
    started = time.monotonic()
    assert [i.name for i in batcher.next_group() or []] == ["x", "y"]
    assert time.monotonic() - started < 5


def test_close_drains_without_waiting_then_ends() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=4, max_wait_s=30.0)
    batcher.put(Item("x", "k"))
    batcher.close()
    started = time.monotonic()
    assert [i.name for i in batcher.next_group() or []] == ["x"]
    assert batcher.next_group() is None and time.monotonic() - started < 5
    with pytest.raises(RuntimeError, match="closed"):
        batcher.put(Item("y", "k"))


def test_close_wakes_a_waiting_worker() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=1, max_wait_s=0.0)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(batcher.next_group()))
    worker.start()
    time.sleep(0.05)
    batcher.close()
    worker.join(5)
    assert got == [None]


@pytest.mark.parametrize("bad", [{"max_batch": 0, "max_wait_s": 0.0}, {"max_batch": 1, "max_wait_s": -1.0}])
def test_nonsense_limits_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Batcher(**bad)


def _rows(count: int) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((1, 5)).astype(np.float32),) for _ in range(count)]


def test_a_batched_call_that_changes_bits_is_never_used() -> None:
    policy, rows = BatchPolicy(exact=True), _rows(3)
    single = lambda x: x * np.float32(3)  # noqa: E731
    off_by_an_ulp = lambda x: np.nextafter(x * np.float32(3), np.float32(np.inf))  # noqa: E731
    for _ in range(2):
        results, used = run_rows("sample", "k", rows, policy, single, off_by_an_ulp)
        assert not used and all(np.array_equal(r, single(*row)) for r, row in zip(results, rows))
    assert policy.verdict("sample", "k", 3) is False


def test_a_bit_exact_batched_call_is_used_after_the_first_check() -> None:
    policy, rows = BatchPolicy(exact=True), _rows(2)
    calls: list[int] = []

    def batched(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x * np.float32(3)

    first = run_rows("sample", "k", rows, policy, lambda x: x * np.float32(3), batched)
    second = run_rows("sample", "k", rows, policy, lambda x: x * np.float32(3), batched)
    assert (first[1], second[1], calls) == (False, True, [2, 2])
    assert all(np.array_equal(a, b) for a, b in zip(first[0], second[0]))
    assert policy.verdict("sample", "k", 3) is None  # another size is checked on its own


def test_without_exact_the_batched_call_is_always_used() -> None:
    rows = _rows(2)
    results, used = run_rows("sample", "k", rows, BatchPolicy(exact=False), lambda x: x, lambda x: x + np.float32(1))
    assert used and all(np.array_equal(r, row[0] + np.float32(1)) for r, row in zip(results, rows))
