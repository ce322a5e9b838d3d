"""`pdd-bench` on the tiny bundle: the report's schema, stage accounting, outputs written, the cold-start subprocess,
CUDA-event plumbing (simulated; real on a GPU), and every bad input → one `error:` line. Speed is never asserted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pdd.runtime import bench, bench_report, bench_timing
from pdd.runtime.backends import create_backend
from pdd.runtime.bundle import load_bundle
from pdd.runtime.cli_bench import app
from pdd.runtime.errors import ConfigError
from pdd.runtime.sampler import SamplerSettings
from tests.support.cli import error_line

runner = CliRunner()


def pdd_bench(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def check_stats(stats: dict, n: int | None = None) -> None:
    assert set(bench_report.report_keys()["stats"]) <= set(stats)
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    if n is not None:
        assert stats["n"] == n


# -- pieces ----------------------------------------------------------------------------------------------------------


def test_parse_batches() -> None:
    assert bench.parse_batches("1,4,8") == (1, 4, 8)
    assert bench.parse_batches(" 2 , 2,1") == (2, 1)
    for bad in ("", "0", "1,-2", "a,b", "1.5"):
        with pytest.raises(ConfigError, match="--batch"):
            bench.parse_batches(bad)


def test_interleaved_alternates_order_and_ratio_has_spread() -> None:
    log: list[str] = []
    times = bench_timing.interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, runs=3, warmup=1)
    assert log == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B / B A / A B
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    ratio = bench_timing.ratio_stats([2.0, 4.0, 6.0, 8.0], [1.0, 1.0, 2.0, 2.0])
    assert ratio["median"] == pytest.approx(3.5) and ratio["of_medians"] == pytest.approx(5.0 / 1.5)
    assert ratio["p10"] <= ratio["median"] <= ratio["p90"] and ratio["n"] == 4
    with pytest.raises(ValueError):
        bench_timing.ratio_stats([1.0], [1.0, 2.0])


@pytest.mark.parametrize("mode", ["sampler", "loop"])
def test_request_stages_add_up_to_end_to_end(tiny_bundle_dir: Path, tmp_path: Path, mode: str) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    backend = bench_timing.TimedBackend(create_backend("ort", bundle, device="cpu"))
    with backend:
        request = bench_timing.RequestBench(bundle, backend, SamplerSettings(mode=mode), batch=2, io_dir=tmp_path)
        times = [request() for _ in range(3)]
    steps = bundle.steps
    for t in times:
        assert set(t.stages) == set(bench_timing.STAGES)
        assert all(v >= 0 for v in t.stages.values())
        inside = sum(v for k, v in t.stages.items() if k != "io")
        assert inside == pytest.approx(t.end_to_end, rel=1e-6, abs=1e-6)
        assert len(t.model_calls) == (steps if mode == "loop" else 1)
        assert t.stages["io"] > 0 and t.device_ms == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-0.wav", "bench-1.wav"]
    summary = bench_timing.summarise_requests(times, 2, steps, mode, bundle.audio.clip_seconds)
    check_stats(summary["end_to_end"], n=3)
    check_stats(summary["denoiser_step"], n=3 * (steps if mode == "loop" else 1))
    assert summary["rtf"] == pytest.approx(2 * bundle.audio.clip_seconds / (summary["end_to_end"]["p50"] / 1e3))


class FakeCudart:
    """Just enough of cuda-python's runtime API for CudaEvents: events are numbers, record stamps a fake device clock."""

    cudaError_t = SimpleNamespace(cudaSuccess=0)

    def __init__(self) -> None:
        self.clock, self.stamps, self.next = 0.0, {}, 0

    def cudaEventCreate(self):
        self.next += 1
        return 0, self.next

    def cudaEventRecord(self, event, stream):
        assert stream == "stream"
        self.clock += 1.5  # each recorded event: 1.5 ms of "device work" since the last one
        self.stamps[event] = self.clock
        return (0,)

    def cudaEventSynchronize(self, event):
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return 0, self.stamps[end] - self.stamps[start]

    def cudaEventDestroy(self, event):
        return (0,)


def test_timed_backend_reads_cuda_event_device_time(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    inner = create_backend("ort", bundle, device="cpu")
    inner.stream, inner.cuda = "stream", SimpleNamespace(rt=FakeCudart())  # what the trt backend exposes
    events = bench_timing.cuda_events_for(inner)
    assert events is not None
    backend = bench_timing.TimedBackend(inner, events)
    with backend:
        request = bench_timing.RequestBench(bundle, backend, SamplerSettings(mode="loop"), batch=1)
        result = request()
    assert result.device_ms == {"denoiser": pytest.approx(1.5 * bundle.steps)}
    assert bench_timing.cuda_events_for(create_backend("ort", bundle, device="cpu")) is None  # ort exposes no stream


@pytest.mark.gpu
def test_cuda_events_on_a_real_gpu(tiny_bundle_dir: Path) -> None:
    from pdd.runtime.backends import backend_problem

    if backend_problem("trt"):
        pytest.skip(backend_problem("trt"))
    options = bench.BenchOptions(engine=tiny_bundle_dir, backend="trt", runs=3, warmup=1, cold_runs=0)
    report = bench.run_benchmark(options)
    device = report["results"][0]["device_ms"]
    assert "sampler" in device and device["sampler"]["p50"] > 0


# -- the whole report ------------------------------------------------------------------------------------------------


def test_report_schema_markdown_and_targets(tiny_bundle_dir: Path) -> None:
    options = bench.BenchOptions(engine=tiny_bundle_dir, device="cpu", batches=(1, 2), runs=3, warmup=1, cold_runs=1,
                                 ab=True, ab_runs=2)
    report = bench.run_benchmark(options)
    json.dumps(report)  # plain JSON all the way down
    keys = bench_report.report_keys()
    assert set(keys["top"]) <= set(report) and report["format"] == bench_report.REPORT_FORMAT
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for result in report["results"]:
        assert set(keys["result"]) <= set(result)
        assert set(keys["stages"]) == set(result["stages"])
        for stats in [result["end_to_end"], result["end_to_end_with_io"], *result["stages"].values()]:
            check_stats(stats, n=3)
    cold = report["cold_start"]
    assert cold["torch_imported"] is False and cold["runs"] == 1
    for phase in ("imports_s", "verify_s", "sessions_s", "first_request_s", "total_s", "peak_rss_mb"):
        assert cold[phase] > 0
    ab = report["side_by_side"]
    assert {"sampler_vs_loop", "numpy_vs_graph_vocoder", "griffin_lim_vs_fft_floor"} <= set(ab)
    assert ("threads" in ab) or ("threads" in ab.get("skipped", {}))
    for comparison in ("sampler_vs_loop", "numpy_vs_graph_vocoder", "griffin_lim_vs_fft_floor"):
        assert ab[comparison]["ratio"]["n"] == 2
    assert report["machine"]["threads"]["ort_intra_op"] >= 1
    assert report["load_average"]["start"] is None or len(report["load_average"]["start"]) == 3
    targets = report["targets"]
    assert targets["applies"] is False  # the tiny preset is not what the targets are about
    assert {"end_to_end_ms", "cold_start_s", "peak_rss_mb", "gl_over_fft_floor"} <= set(targets["checks"])
    text = bench_report.markdown(report)
    for heading in ("## End to end and throughput", "## Stages", "## Cold start", "## Side by side", "## Targets"):
        assert heading in text
    assert "| 2 |" in text


def test_cli_writes_json_markdown_and_plot(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = {name: tmp_path / f"bench.{ext}" for name, ext in (("json", "json"), ("markdown", "md"), ("plot", "png"))}
    args = ["--engine", tiny_bundle_dir, "--device", "cpu", "--mode", "loop", "--batch", "1,2", "--runs", 2, "--warmup", 0,
            "--cold-runs", 0, "--quiet"]
    result = pdd_bench(*args, "--json", out["json"], "--markdown", out["markdown"], "--plot", out["plot"])
    assert result.exit_code == 0, result.output
    assert "batch 1: p50" in result.output and "batch 2: p50" in result.output
    report = json.loads(out["json"].read_text())
    assert report["resolved"]["mode"] == "loop" and report["cold_start"] is None
    assert out["markdown"].read_text().startswith("# pdd-bench: ")
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing a user made is overwritten without --overwrite, and the refusal comes before any measuring
    error_line(pdd_bench(*args, "--json", out["json"]), "already exists", "--overwrite")
    assert pdd_bench(*args, "--json", out["json"], "--overwrite").exit_code == 0


def test_help_has_a_real_example() -> None:
    result = pdd_bench("--help")
    assert result.exit_code == 0
    assert "pdd-bench --engine engines/small-piano --batch 1,4,8" in result.output


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--batch", "0"], ["--batch"]),
        (["--batch", "1,x"], ["--batch"]),
        (["--mode", "fast"], ["--mode"]),
        (["--backend", "cuda"], ["--backend"]),
        (["--vocoder", "hifigan"], ["--vocoder"]),
        (["--runs", "0"], ["--runs"]),
        (["--warmup", "-1"], ["--warmup"]),
        (["--steps", "3"], ["exactly 4 steps", "--mode loop"]),
        (["--mode", "loop", "--steps", "3"], ["not on this bundle's 4-step grid"]),
        (["--gl-iters", "-2"], ["--gl-iters"]),
        (["--vocoder", "graph", "--gl-iters", "7"], ["Griffin-Lim graph runs exactly 4 iterations"]),
    ],
)
def test_bad_inputs_are_one_line_errors(tiny_bundle_dir: Path, args: list[str], fragments: list[str]) -> None:
    result = pdd_bench("--engine", tiny_bundle_dir, "--device", "cpu", "--runs", 1, "--warmup", 0, "--cold-runs", 0, *args)
    error_line(result, *fragments)


def test_bad_paths_are_one_line_errors(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    error_line(pdd_bench("--engine", tmp_path / "nope"), "does not exist")
    error_line(pdd_bench("--engine", tiny_bundle_dir, "--json", tmp_path / "missing" / "r.json"), "does not exist")
    error_line(pdd_bench("--engine", tiny_bundle_dir, "--markdown", tmp_path), "is a folder")
