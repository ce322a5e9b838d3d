"""The measuring harness itself: percentiles on known data, warm-up counted apart, cold start in a fresh process."""

import pytest

from pdd.runtime.bench_coldstart import cold_start
from pdd.runtime.bench_timing import Stats, time_calls


def test_percentiles_on_known_data():
    stats = Stats.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.n == 100
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)
    assert (stats.min, stats.max, stats.mean) == pytest.approx((1.0, 100.0, 50.5))
    assert set(stats.to_dict()) == {"n", "p50", "p90", "p99", "mean", "min", "max"}
    with pytest.raises(ValueError):
        Stats.of([])


def test_time_calls_counts_warmup_separately():
    calls = []
    times = time_calls(lambda: calls.append(1), runs=5, warmup=3)
    assert len(times) == 5 and len(calls) == 8 and all(t >= 0 for t in times)


def test_cold_start_runs_in_a_fresh_process():
    code = "import time, json; s = time.perf_counter(); import numpy; print(json.dumps({'import_s': time.perf_counter() - s}))"
    result = cold_start(code, runs=2)
    assert result["import_s"] > 0 and result["process_wall_s"] >= result["import_s"]
    with pytest.raises(RuntimeError, match="boom"):
        cold_start("raise SystemExit('boom')", runs=1)
