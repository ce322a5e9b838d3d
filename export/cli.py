"""`pdd-export`: a teacher or student checkpoint → a verified engine bundle (ONNX graphs, golden tensors, manifest), and
optionally TensorRT plans and a Triton model repository.

A thin typer wrapper over `pdd.export.bundle_writer.export_bundle` and `pdd.export.triton.write_repository`; torch is
imported inside the command so `--help` stays instant.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import DEFAULT_ITERS
from pdd.runtime.untrusted import is_inside, printable

MAX_GL_ITERS = 1000  # as a bundle may carry (pdd.runtime.manifest.MAX_GL_ITERS)
MAX_TRT_BATCH = 128
TRITON_MODEL_FILES = ("config.pbtxt",)

HELP = """Export a checkpoint to an engine bundle that `pdd-run` plays without PyTorch.

Writes denoiser.onnx (one model call), sampler.onnx (the whole N-step DDIM unrolled into one graph), vocoder.onnx (mel → waveform by Griffin-Lim), the shared weights file, golden.npz and manifest.json. Every graph is checked in onnxruntime against PyTorch first; nothing is written unless every check passes.

Examples:

  pdd-export --ckpt runs/distill/student-8.pt --steps 8 --out engines/small-8

  pdd-export --ckpt runs/teacher/teacher.pt --steps 64 --out engines/teacher-64 --precision fp16

  pdd-export --ckpt runs/distill/student-8.pt --steps 8 --out engines/small-8 --force --trt --triton triton-repo

  pdd-export --ckpt runs/distill/student-8.pt --steps 8 --out engines/small-8 --vocoder-ckpt runs/vocoder/vocoder.pt

  pdd-export --from-bundle engines/small-8 --vocoder-ckpt runs/vocoder/vocoder.pt --out engines/small-8 --force

  pdd-export --from-bundle engines/small-8 --out engines/small-8 --force      # today's Griffin-Lim graph, learned vocoder kept

A student exports with its own step count only; a teacher with any count up to 1024 (above 64 the bundle has no fused sampler and pdd-run loops the denoiser). --trt builds TensorRT plans for the GPU of this machine (needs the tensorrt package); --triton writes a Triton Inference Server model repository (sampler, vocoder, and an ensemble noise → waveform).
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def export(
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Teacher or student checkpoint written by pdd-train / pdd-distill."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps: a student's own count, or any count for a teacher."),
    vocoder_ckpt: Optional[Path] = typer.Option(None, "--vocoder-ckpt", help="Also ship the learned vocoder of this `pdd-vocoder train` checkpoint (the default back end then)."),
    vocoder_gate: Optional[str] = typer.Option(None, "--vocoder-gate", help="THRESHOLD,KNEE: the learned vocoder's silence gate (default: the one it was trained with)."),
    from_bundle: Optional[Path] = typer.Option(None, "--from-bundle", help="Instead of --ckpt: rebuild the back end of this existing bundle (U-Net graphs copied; its learned vocoder kept unless --vocoder-ckpt replaces it)."),
    drop_vocoder: bool = typer.Option(False, "--drop-vocoder", help="With --from-bundle: leave the source's learned vocoder out (Griffin-Lim only)."),
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
    MAX_UNROLLED_STEPS, PRECISIONS, ExportError, ExportOptions, export_bundle, human_size = _export_imports()
    gate = parse_gate(vocoder_gate)
    if gate is not None and vocoder_ckpt is None:
        raise ExportError("--vocoder-gate sets the learned vocoder's gate; pass --vocoder-ckpt too")
    say = lambda message: print(f"pdd-export: {message}", file=sys.stderr, flush=True)  # noqa: E731
    if from_bundle is not None:
        if ckpt is not None or steps is not None or trt or triton is not None or precision != "fp32":
            raise ExportError("--from-bundle rebuilds only the back end: it takes --vocoder-ckpt, --drop-vocoder, --out, "
                              "--force and --name")
        from pdd.export.bundle_upgrade import upgrade_bundle

        _print_report(upgrade_bundle(from_bundle, out, vocoder_ckpt, force=force, name=name, progress=say,
                                     vocoder_gate=gate, drop_vocoder=drop_vocoder), human_size)
        return
    if drop_vocoder:
        raise ExportError("--drop-vocoder goes with --from-bundle (an export from --ckpt ships a learned vocoder only "
                          "with --vocoder-ckpt)")
    if ckpt is None or steps is None:
        raise ExportError("pass --ckpt and --steps (or --from-bundle DIR to rebuild an existing bundle's back end)")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if triton is not None and triton.exists() and not force:
        raise ExportError(f"{triton} already exists; pass --force to replace it")
    if triton is not None and steps > MAX_UNROLLED_STEPS:
        raise ExportError(f"--triton serves the fused sampler, which is only built up to {MAX_UNROLLED_STEPS} steps (asked for {steps})")
    if not 1 <= trt_max_batch <= MAX_TRT_BATCH:
        raise ExportError(f"--trt-max-batch must be in 1..{MAX_TRT_BATCH}, got {trt_max_batch}")
    if gl_iters > MAX_GL_ITERS:
        raise ExportError(f"--gl-iters must be <= {MAX_GL_ITERS}, got {gl_iters}")
    if triton is not None and triton.exists():
        check_triton_folder(triton, [ckpt, out] + ([eval_json] if eval_json else []))
    options = ExportOptions(
        ckpt=ckpt, steps=steps, out=out, force=force, precision=precision, gl_iters=gl_iters, name=name,
        eval_json=eval_json, trt=trt, trt_max_batch=trt_max_batch, vocoder_ckpt=vocoder_ckpt,
        vocoder_gate=gate,
    )
    report = export_bundle(options, progress=say)
    _print_report(report, human_size)
    if triton is not None:
        from pdd.export.triton import write_repository

        names = write_repository(report.out, triton, force=force, max_batch=trt_max_batch, trt_key=report.trt_key)
        print(f"wrote Triton repository {printable(triton)} ({', '.join(names)})")


def _export_imports() -> tuple[Any, ...]:
    """The exporter, or one error line naming what to install: it needs PyTorch and onnx, which the runtime does not."""
    try:
        from pdd.export.bundle_writer import (MAX_UNROLLED_STEPS, PRECISIONS, ExportError, ExportOptions, export_bundle,
                                              human_size)
    except ImportError as exc:
        missing = exc.name or "a package"
        raise ConfigError(f"pdd-export needs the [export] and [train] extras ({printable(missing, 60)} is missing): "
                          "pip install 'pdd[train,export]'") from None
    return MAX_UNROLLED_STEPS, PRECISIONS, ExportError, ExportOptions, export_bundle, human_size


def parse_gate(text: str | None) -> Any:
    """--vocoder-gate "THRESHOLD,KNEE" (normalised mel units) → SilenceGate, or None."""
    from pdd.export.bundle_writer import ExportError
    from pdd.runtime.silence import SilenceGate

    try:
        return SilenceGate.parse(text)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None


def _print_report(report: Any, human_size: Callable[[int], str]) -> None:
    print(f"wrote {printable(report.out)} in {report.seconds:.1f} s ({', '.join(report.graphs)})")
    if report.stage_seconds:
        print("  time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.stage_seconds.items()))
    for relpath, size in report.files.items():
        print(f"  {relpath:<40} {human_size(size):>10}")
    print(f"  {'total':<40} {human_size(sum(report.files.values())):>10}")
    print("parity (onnxruntime):")
    for parity in report.parity:
        print(f"  {parity.describe()}")
    for note in report.notes:
        print(f"note: {note}")


def check_triton_folder(triton: Path, inputs: list[Path]) -> None:
    """--force replaces the Triton folder whole: refuse one that holds this export's inputs or output, or anything but
    a model repository pdd wrote (pdd_*/config.pbtxt and pdd_*/1/* files), naming what is in the way."""
    from pdd.export.bundle_writer import ExportError
    from pdd.export.triton import PREFIX
    from pdd.runtime.fileio import files_below

    if not triton.is_dir():
        raise ExportError(f"--triton {triton} exists and is not a folder")
    for source in inputs:
        if is_inside(triton, source):
            raise ExportError(f"{source} lies inside --triton {triton}, which --force would replace; choose another folder")
    foreign = []
    for path in files_below(triton):
        parts = path.relative_to(triton).parts
        ours = (not path.is_symlink() and len(parts) >= 2 and parts[0].startswith(f"{PREFIX}_")
                and (parts[1:] == TRITON_MODEL_FILES or (len(parts) == 3 and parts[1] == "1")))
        if not ours:
            foreign.append(path.relative_to(triton).as_posix())
        if len(foreign) > 5:
            break
    if foreign:
        shown = ", ".join(printable(name, 120) for name in foreign[:5]) + (" and more" if len(foreign) > 5 else "")
        raise ExportError(f"--triton {triton} holds files pdd-export did not write ({shown}); --force replaces only a "
                          "repository it wrote: move those away or choose another folder")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the export's cleanup: the half-built temp folder is removed


def main() -> None:
    # A plain SIGTERM (a job scheduler, `kill`) would skip Python's cleanup and leave the temp folder behind.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


if __name__ == "__main__":
    main()
