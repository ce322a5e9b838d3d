"""`pdd-export`: a teacher or student checkpoint → a verified engine bundle (ONNX graphs, golden tensors, manifest), and
optionally TensorRT plans and a Triton model repository.

A thin typer wrapper over `pdd.export.bundle_writer.export_bundle` and `pdd.export.triton.write_repository`; torch is
imported inside the command so `--help` stays instant.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.griffinlim import DEFAULT_ITERS

HELP = """Export a checkpoint to an engine bundle that `pdd-run` plays without PyTorch.

Writes denoiser.onnx (one model call), sampler.onnx (the whole N-step DDIM unrolled into one graph), vocoder.onnx (mel → waveform by Griffin-Lim), the shared weights file, golden.npz and manifest.json. Every graph is checked in onnxruntime against PyTorch first; nothing is written unless every check passes.

Examples:

  pdd-export --ckpt runs/distill/student-8.pt --steps 8 --out engines/small-8

  pdd-export --ckpt runs/teacher/teacher.pt --steps 64 --out engines/teacher-64 --precision fp16

  pdd-export --ckpt runs/distill/student-8.pt --steps 8 --out engines/small-8 --force --trt --triton triton-repo

A student exports with its own step count only; a teacher with any count up to 1024 (above 64 the bundle has no fused sampler and pdd-run loops the denoiser). --trt builds TensorRT plans for the GPU of this machine (needs the tensorrt package); --triton writes a Triton Inference Server model repository (sampler, vocoder, and an ensemble noise → waveform).
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def export(
    ckpt: Path = typer.Option(..., "--ckpt", help="Teacher or student checkpoint written by pdd-train / pdd-distill."),
    steps: int = typer.Option(..., "--steps", help="Sampling steps: a student's own count, or any count for a teacher."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to create (e.g. engines/NAME)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (and --triton) folder."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or fp16 weights with fp32 norms/softmax/vocoder."),
    gl_iters: int = typer.Option(DEFAULT_ITERS, "--gl-iters", help="Griffin-Lim iterations baked into vocoder.onnx."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT plans for this GPU (needs tensorrt + a GPU)."),
    trt_max_batch: int = typer.Option(8, "--trt-max-batch", help="Largest batch the TensorRT plans and the Triton models serve."),
    triton: Optional[Path] = typer.Option(None, "--triton", help="Also write a Triton Inference Server model repository here."),
    eval_json: Optional[Path] = typer.Option(None, "--eval-json", help="pdd-eval JSON to record in the manifest's provenance."),
    name: Optional[str] = typer.Option(None, "--name", help="Bundle name in the manifest (default: the --out folder's name)."),
) -> None:
    from pdd.export.bundle_writer import MAX_UNROLLED_STEPS, PRECISIONS, ExportError, ExportOptions, export_bundle, human_size

    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if triton is not None and triton.exists() and not force:
        raise ExportError(f"{triton} already exists; pass --force to replace it")
    if triton is not None and steps > MAX_UNROLLED_STEPS:
        raise ExportError(f"--triton serves the fused sampler, which is only built up to {MAX_UNROLLED_STEPS} steps (asked for {steps})")
    if trt_max_batch < 1:
        raise ExportError(f"--trt-max-batch must be >= 1, got {trt_max_batch}")
    options = ExportOptions(
        ckpt=ckpt, steps=steps, out=out, force=force, precision=precision, gl_iters=gl_iters, name=name,
        eval_json=eval_json, trt=trt, trt_max_batch=trt_max_batch,
    )
    report = export_bundle(options, progress=lambda message: print(f"pdd-export: {message}", file=sys.stderr, flush=True))
    print(f"wrote {report.out} in {report.seconds:.1f} s ({', '.join(report.graphs)})")
    print("  time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.stage_seconds.items()))
    for relpath, size in report.files.items():
        print(f"  {relpath:<40} {human_size(size):>10}")
    print(f"  {'total':<40} {human_size(sum(report.files.values())):>10}")
    print("parity (onnxruntime):")
    for parity in report.parity:
        print(f"  {parity.describe()}")
    for note in report.notes:
        print(f"note: {note}")
    if triton is not None:
        from pdd.export.triton import write_repository

        names = write_repository(report.out, triton, force=force, max_batch=trt_max_batch, trt_key=report.trt_key)
        print(f"wrote Triton repository {triton} ({', '.join(names)})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the export's cleanup: the half-built temp folder is removed


def main() -> None:
    # A plain SIGTERM (a job scheduler, `kill`) would skip Python's cleanup and leave the temp folder behind.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


if __name__ == "__main__":
    main()
