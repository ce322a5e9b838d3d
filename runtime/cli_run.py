"""`pdd-run`: generate music from an engine bundle with no PyTorch (onnxruntime or native TensorRT).

A thin typer wrapper over `pdd.runtime.generate` (files through `Engine`, verify); heavy imports happen inside the command so `--help`
stays instant.
"""

from __future__ import annotations

import os

# This process owns the machine's threads: one BLAS thread for the small mel⁻¹ matmuls and the pseudo-inverse, so
# OpenBLAS doesn't spin against onnxruntime and scipy.fft (1.21× per request and cold start 1.41 → 0.66 s on 2 cores,
# measured side by side). Set before numpy is first imported; the user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors

HELP = """Generate music clips from an engine bundle (no PyTorch needed).

Writes OUT/pdd-SEED-I.wav (or .flac) with a JSON sidecar per clip (engine name and hash, seed, steps, backend, timings).
From Python, `pdd.runtime.Engine` gives the same samples as an array.

Examples:

  pdd-run -n 4 --seed 7                          # 4 clips from the shipped default engine into ./out

  pdd-run --engine engines/small-piano --mode loop --steps 4 --backend ort --out takes --plot

  pdd-run --engine engines/small-piano --verify  # golden check: max error of every graph on the chosen backend

  pdd-run -n 1 --seamless 4 --crossfade 0.5      # one longer file: 4 clips joined with crossfades

  pdd-run --vocoder gl --gl-iters 64             # Griffin-Lim instead of the learned vocoder

Modes: `sampler` runs the fused N-step graph in one call (steps fixed at export); `loop` calls the denoiser per step with the DDIM update on the host and accepts any divisor of the bundle's N; `auto` is `sampler` at the bundle's N and `loop` otherwise.

Vocoders: `auto` is the bundle's default (the learned vocoder when it ships one; Griffin-Lim when --gl-iters is given); `neural` the learned vocoder; `gl` Griffin-Lim behind the silence gate (the bundle's graph on a GPU, numpy on the CPU); `graph` and `numpy` force one Griffin-Lim implementation.
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def run(
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="Bundle folder, or the name of a shipped engine such as small-piano (default: the shipped default)."),
    n: int = typer.Option(4, "-n", "--num", help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Noise seed (numpy Generator); clip i of a seed is the same on every backend."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Clips per model call (default min(n, 4))."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the bundle's; loop mode: a divisor of it)."),
    mode: str = typer.Option("sampler", "--mode", help="sampler (one fused call) | loop (denoiser per step) | auto (sampler at the bundle's steps, else loop)."),
    backend: str = typer.Option("auto", "--backend", help="auto | ort (onnxruntime) | trt (native TensorRT)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (where the ort backend runs)."),
    vocoder: str = typer.Option("auto", "--vocoder", help="auto (the bundle's default) | neural (learned vocoder) | gl (Griffin-Lim) | graph | numpy (Griffin-Lim graph / numpy)."),
    gl_iters: Optional[int] = typer.Option(None, "--gl-iters", help="Griffin-Lim iterations (default: the vocoder graph's, else 32)."),
    fmt: str = typer.Option("wav", "--format", help="wav | flac."),
    float_wav: bool = typer.Option(False, "--float", help="Write 32-bit float WAV instead of 16-bit PCM."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder (created)."),
    plot: bool = typer.Option(False, "--plot", help="Also write a log-mel spectrogram PNG per clip (needs matplotlib)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    verify_golden: bool = typer.Option(False, "--verify", help="Run golden.npz through the backend, print max errors, exit."),
    seamless: int = typer.Option(1, "--seamless", help="Join this many consecutive clips per file (longer audio)."),
    crossfade: float = typer.Option(0.5, "--crossfade", help="Seconds of equal-power crossfade between joined clips."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    from pdd.runtime.engine import DEFAULT_BATCH
    from pdd.runtime.generate import RunOptions, generate

    if verify_golden:
        _verify(engine, backend, device)
        return
    options = RunOptions(
        engine=engine, n=n, seed=seed, batch_size=batch_size, steps=steps, mode=mode, backend=backend, device=device,
        vocoder=vocoder, gl_iters=gl_iters, format=fmt, subtype="float" if float_wav else "pcm16", out=out, plot=plot,
        overwrite=overwrite, seamless=seamless, crossfade=crossfade,
    )
    batch = batch_size or min(max(n * seamless, 1), DEFAULT_BATCH)
    if quiet or n * seamless <= batch:
        results = generate(options)
    else:
        results = _with_progress(options)
    if not quiet and results:
        from pdd.runtime.untrusted import printable  # a non-UTF-8 --out must print, not crash

        meta = results[0].meta
        names = results[0].audio.name if len(results) == 1 else f"{results[0].audio.name} … {results[-1].audio.name}"
        per_file = sum(r.meta["timings_ms"]["generate"] for r in results) / len(results)
        print(
            f"wrote {len(results)} clip(s) to {printable(out)}/ ({printable(names)}): {meta['seconds']} s each, {meta['steps']} steps "
            f"({meta['mode']}, vocoder {meta['vocoder']}), {per_file:.1f} ms each on {printable(meta['backend_detail'])}"
        )


def _with_progress(options: "object") -> list:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pdd.runtime.generate import generate

    with Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task("clips", total=options.n * options.seamless)  # type: ignore[attr-defined]
        return generate(options, progress=lambda done, total: bar.update(task, completed=done))  # type: ignore[arg-type]


def _verify(engine: Optional[Path], backend_name: str, device: str) -> None:
    from pdd.runtime.engine import Engine
    from pdd.runtime.errors import BundleError
    from pdd.runtime.generate import verify

    with Engine.load(engine, backend_name, device) as opened:
        bundle = opened.bundle
        checks = verify(bundle, opened.backend)
        detail = opened.backend.describe()
    print(f"golden check of {bundle.name} ({bundle.hash[:12]}) on {detail}:")
    for check in checks:
        status = "ok" if check.ok else "FAIL"
        key = f"{check.graph}.{check.tensor}"
        print(
            f"  {key:<18} max abs error {check.max_abs_error:.3g} = {check.relative_error:.3g} of peak "
            f"{check.reference_peak:.3g}  (tolerance {check.tolerance:g})  {status}"
        )
    failed = [c for c in checks if not c.ok]
    if failed:
        worst = max(failed, key=lambda c: c.relative_error)
        raise BundleError(
            f"golden check failed for {len(failed)} output(s), worst {worst.graph}.{worst.tensor} "
            f"({worst.relative_error:.3g} of peak > {worst.tolerance:g}); re-export the bundle or rebuild its TensorRT plans"
        )


def main() -> None:
    app(prog_name="pdd-run")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
