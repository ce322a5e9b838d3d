"""`pdd-eval`: the quality-vs-steps table for a teacher and its distilled students, or scores for any folders of audio."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.silence import SilenceGate
from pdd.runtime.griffinlim import DEFAULT_ITERS
from pdd.runtime.schedule import TEACHER_STEPS
from pdd.training.evaluate import STANDARD_STEPS, EvalSettings

HELP = f"""Score generated music against held-out real clips: FD-BP, KAD, FD-mel, spectral flux, teacher fidelity, time per
clip, and structure (note density, pitch-class entropy, key clarity, pulse clarity, top-voice stepwise motion, polyphony,
pitch range of Basic Pitch's transcription, each as × real).

Model mode (--teacher, --data, optionally --students): K clips per row from fixed seeded noise, teacher DDIM@N and student@N
for every N in {{{', '.join(str(s) for s in STANDARD_STEPS)}}} that exists, plus a Griffin-Lim ceiling row (held-out real mels
inverted with the same Griffin-Lim) and a real-vs-real row (two halves of the held-out clips, split by source file). Writes
table.md, table.json, metrics_vs_steps.png, spectrograms.png and wavs/.

Folder mode (--generated DIR --reference DIR): scores any folder of audio against another, e.g. other systems' outputs;
with 4 or more reference files, a real-vs-real row scores half of them against the other half (the floor).

FD-BP, KAD and structure use Basic Pitch's bundled ONNX model (install: pip install --no-deps basic-pitch==0.4.0; without
it they are skipped with a note). It is not VGGish FAD: VGGish weights come from a model hub, which pdd never downloads.

[bold]Examples[/bold]

  pdd-eval --teacher runs/teacher-small/checkpoint.pt --students runs/distill-small --data data/cache-paper --out runs/eval -k 16

  pdd-eval --teacher runs/teacher-small/checkpoint.pt --data data/cache-paper --out runs/eval-quick -k 8 --steps 64,8,1

  pdd-eval --generated other-system/wavs --reference data/piano-heldout --out runs/eval-other
"""

app = make_app(HELP)


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--steps must be a comma-separated list of integers, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ConfigError(f"--steps must list positive step counts, got {text!r}")
    return steps


@app.command(help=HELP)
@user_errors
def run(
    out: Path = typer.Option(..., "--out", help="Output folder (refused if it holds files, unless --force)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint (model mode)."),
    students: Optional[List[Path]] = typer.Option(
        None, "--students", help="pdd-distill folder with student-N.pt (model mode); repeat it for a run made in stages."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="Mel cache whose held-out clips are the reference (model mode)."),
    generated: Optional[Path] = typer.Option(None, "--generated", help="Folder of generated audio (folder mode)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Folder of reference audio (folder mode)."),
    preset: str = typer.Option("paper", "--preset", help="Audio preset of the mel front end in folder mode."),
    clips: int = typer.Option(16, "-k", "--clips", help="Generated clips per row."),
    steps: str = typer.Option(",".join(str(s) for s in STANDARD_STEPS), "--steps", help="Step counts of the rows."),
    reference_steps: int = typer.Option(TEACHER_STEPS, "--reference-steps", help="Teacher DDIM steps that fidelity is measured against."),
    reference_clips: int = typer.Option(64, "--reference-clips", help="At most this many held-out reference clips."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise (and of the held-out split)."),
    gl_iters: int = typer.Option(DEFAULT_ITERS, "--gl-iters", help="Griffin-Lim iterations."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sampling batch size."),
    ddpm_steps: int = typer.Option(
        0, "--ddpm-steps", help="Also a 'teacher DDPM@N' row: ancestral sampling on t = k/N (the paper's baseline: 1000); 0 = off."
    ),
    fd_bp: bool = typer.Option(True, "--fd-bp/--no-fd-bp", help="Compute FD-BP (needs basic-pitch)."),
    wavs: bool = typer.Option(True, "--wavs/--no-wavs", help="Write every row's clips as WAV."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier evaluation in --out (only its own files)."),
    vocoder_ckpt: Optional[Path] = typer.Option(
        None, "--vocoder-ckpt", help="Also decode with this learned vocoder: a 'vocoder ceiling' row and each row twice."
    ),
    vocoder_gate: Optional[str] = typer.Option(
        None, "--vocoder-gate", help="THRESHOLD,KNEE: the learned vocoder's silence gate, e.g. the one an engine was exported "
        "with (default: the one it was trained with)."
    ),
) -> None:
    folder_mode = generated is not None or reference is not None
    model_mode = teacher is not None or bool(students) or data is not None
    if folder_mode and model_mode:
        raise ConfigError("use either --teacher/--students/--data (model mode) or --generated/--reference (folder mode)")
    if folder_mode:
        if generated is None or reference is None:
            raise ConfigError("folder mode needs both --generated DIR and --reference DIR")
        from pdd.training.evaluate import evaluate_folders

        evaluate_folders(generated, reference, out, get_preset(preset), fd_bp=fd_bp, force=force)
        print(f"pdd-eval: wrote {out / 'table.md'}")
        return
    if teacher is None or data is None:
        raise ConfigError("model mode needs --teacher CHECKPOINT and --data CACHE (and usually --students DIR); "
                          "or score folders with --generated DIR --reference DIR")
    if threads is not None and not 1 <= threads <= 1024:
        raise ConfigError("--threads must be in 1..1024")
    gate = SilenceGate.parse(vocoder_gate)
    if gate is not None and vocoder_ckpt is None:
        raise ConfigError("--vocoder-gate needs --vocoder-ckpt (it is the learned vocoder's gate)")
    settings = EvalSettings(clips=clips, seed=seed, steps=parse_steps(steps), reference_steps=reference_steps,
                            gl_iters=gl_iters, batch_size=batch_size, reference_clips=reference_clips, fd_bp=fd_bp,
                            wavs=wavs, ddpm_steps=ddpm_steps)
    from pdd.training.eval_report import comparison_line
    from pdd.training.evaluate import evaluate_models

    result = evaluate_models(teacher, list(students) if students else None, data, out, settings, device=device,
                             threads=threads, force=force, vocoder_ckpt=vocoder_ckpt,
                             vocoder_gate=gate)
    for entry in result.comparisons:
        print(f"pdd-eval: {comparison_line(entry, reference_steps)}")
    print(f"pdd-eval: wrote {out / 'table.md'}")


def main() -> None:
    app()
