"""`pdd-bench`: latency per stage, end to end, throughput, cold start, memory and the machine for an engine bundle.

A thin typer wrapper over `pdd.runtime.bench` and `bench_report` (no PyTorch: the side-by-side with PyTorch eager is benchmarks/compare.py).
Heavy imports happen inside the command so `--help` stays instant.
"""

from __future__ import annotations

import os

# This process owns the machine's threads: one BLAS thread for the small mel⁻¹ matmuls and the pseudo-inverse, so
# OpenBLAS doesn't spin against onnxruntime and scipy.fft (1.21× per request and cold start 1.41 → 0.66 s on 2 cores,
# measured side by side). Set before numpy is first imported; the user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors

HELP = """Benchmark an engine bundle: per-stage latency (denoiser per step and total, vocoder, host overhead, I/O), end-to-end
p50/p90/p99/mean/min, real-time factor and throughput per batch size, cold start in a fresh process, peak RSS, and the machine
(CPU, GPU, driver, onnxruntime/TensorRT versions, threads, Jetson power mode and clocks, load average).

Examples:

  pdd-bench                                      # the shipped default engine, batch 1: 10 warm-up + 100 timed requests

  pdd-bench --engine engines/small-piano --batch 1,4,8 --json bench.json --markdown bench.md --plot bench.png

  pdd-bench --engine engines/small-piano --ab    # + interleaved A/B: modes, vocoders, GL vs FFT floor, threads

  pdd-bench --engine engines/small-piano --backend trt --batch 1,8   # GPU/Jetson, after pdd-export --trt

Performance figures come from here (and benchmarks/compare.py for PyTorch eager side by side), never from timed tests.
On a shared machine compare only numbers measured in the same run, and read the load average printed with them.
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def bench(
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="Bundle folder, or the name of a shipped engine such as small-piano (default: the shipped default)."),
    backend: str = typer.Option("auto", "--backend", help="auto | ort (onnxruntime) | trt (native TensorRT)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (where the ort backend runs)."),
    mode: str = typer.Option("sampler", "--mode", help="sampler (one fused call) | loop (denoiser per step)."),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, comma-separated, e.g. 1,4,8."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the bundle's; loop mode: a divisor)."),
    vocoder: str = typer.Option("auto", "--vocoder", help="auto (the bundle's default) | neural (learned vocoder) | gl (Griffin-Lim) | graph | numpy (Griffin-Lim graph / numpy)."),
    gl_iters: Optional[int] = typer.Option(None, "--gl-iters", help="Griffin-Lim iterations (default: the vocoder graph's, else 32)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed requests per batch size."),
    runs: int = typer.Option(100, "--runs", help="Timed requests per batch size."),
    seed: int = typer.Option(0, "--seed", help="Noise seed."),
    no_io: bool = typer.Option(False, "--no-io", help="Skip the I/O stage (writing each clip as a WAV to a temp folder)."),
    cold_runs: int = typer.Option(3, "--cold-runs", help="Fresh processes for the cold-start measurement (0: skip)."),
    ab: bool = typer.Option(False, "--ab", help="Also run the interleaved side-by-side comparisons at the first batch size."),
    ab_runs: int = typer.Option(20, "--ab-runs", help="Interleaved rounds per side-by-side pair."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON here."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the report as markdown tables here."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of stages and latency per batch (needs matplotlib)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --json/--markdown/--plot files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines; print only the summary."),
) -> None:
    from pdd.runtime import bench_report as report_lib
    from pdd.runtime.bench import BenchOptions, parse_batches, run_benchmark

    options = BenchOptions(
        engine=engine, backend=backend, device=device, mode=mode, batches=parse_batches(batch), steps=steps,
        vocoder=vocoder, gl_iters=gl_iters, warmup=warmup, runs=runs, seed=seed, io=not no_io, cold_runs=cold_runs, ab=ab,
        ab_runs=ab_runs,
    )
    options.validate()
    _check_counts(options)
    report_lib.check_output_paths([json_out, markdown_out, plot_out], overwrite)
    if plot_out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from pdd.runtime.errors import ConfigError

            raise ConfigError("--plot needs matplotlib: pip install 'pdd[plot]'") from None
    progress = None if quiet else (lambda message: print(f"pdd-bench: {message}", file=sys.stderr, flush=True))
    report = run_benchmark(options, progress=progress)
    if json_out is not None:
        report_lib.write_json(json_out, report, overwrite=overwrite)
    if markdown_out is not None:
        report_lib.write_markdown(markdown_out, report, overwrite=overwrite)
    if plot_out is not None:
        report_lib.write_plot(plot_out, report, overwrite=overwrite)
    for warning in report.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if quiet:
        print(report_lib.summary_line(report))
    else:
        print(report_lib.markdown(report), end="")


# Upper bounds on counts that size allocations or loops up front (a typo must be an error, not hours of work); the
# batch bound is the engine's.
MAX_RUNS = 100_000
MAX_COLD_RUNS = 100


def _check_counts(options: Any) -> None:
    from pdd.runtime.engine import MAX_BATCH
    from pdd.runtime.errors import ConfigError

    limits = (("--batch", max(options.batches), MAX_BATCH), ("the number of --batch sizes", len(options.batches), 16),
              ("--warmup", options.warmup, MAX_RUNS),
              ("--runs", options.runs, MAX_RUNS), ("--ab-runs", options.ab_runs, MAX_RUNS),
              ("--cold-runs", options.cold_runs, MAX_COLD_RUNS))
    for flag, value, limit in limits:
        if value > limit:
            raise ConfigError(f"{flag} must be <= {limit}, got {value}")


def main() -> None:
    app(prog_name="pdd-bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
