"""`pdd-distill`: progressive distillation of a teacher into few-step students (Salimans & Ho 2022), one round per halving."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.schedule import TEACHER_STEPS
from pdd.training.distill import distill, prepare_distill_run

HELP = """Distil a teacher checkpoint into students that sample in fewer DDIM steps (progressive distillation).

Rounds halve the step count, from --from-steps down to --to-steps: each student learns to take in one step what its teacher
takes in two, starts as a copy of that teacher, and becomes the next round's teacher. The folder gets student-N.pt per round
(512, 256, …), progress.pt for the round in progress, distill.json, log.jsonl and loss.png. An existing folder is never
overwritten: continue it with --resume or start over with --force.

Defaults are sized for the CPU `small` preset (300 steps per round at batch 16); the paper uses ~50k per round at batch 128
on accelerators — raise --steps-per-round on a GPU.

[bold]Examples[/bold]

  pdd-distill --teacher runs/teacher-small/checkpoint.pt --from-steps 1024 --to-steps 8 --out runs/distill-small

  pdd-distill --out runs/distill-small --resume

  pdd-distill --teacher runs/distill-small/student-8.pt --from-steps 8 --to-steps 1 --out runs/distill-small-1
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def run(
    out: Path = typer.Option(..., "--out", help="Distillation folder (refused if it holds files, unless --resume/--force)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher checkpoint (pdd-train's checkpoint.pt or a student)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Mel cache to distil on [default: the teacher's training cache]."),
    from_steps: Optional[int] = typer.Option(None, "--from-steps", help=f"The teacher's step count [default: {TEACHER_STEPS}]."),
    to_steps: Optional[int] = typer.Option(None, "--to-steps", help="The last student's step count [default: 8]."),
    steps_per_round: Optional[int] = typer.Option(None, "--steps-per-round", help="Optimiser steps per halving [300]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size [default: 16]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate, annealed linearly to 0 in each round [1e-4]."),
    weighting: Optional[str] = typer.Option(
        None, "--weighting", help="Loss weight: truncated = max(SNR, 1) (default) or snr+1 (= v-MSE)."
    ),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="EMA of the student's weights; 0 = off (default)."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Gradient-norm clip, 0 = off [default: 1.0]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps per in-round checkpoint [100]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of data order, times and noise [default: 0]."),
    guidance: Optional[float] = typer.Option(
        None, "--guidance", help="A note-conditioned teacher's classifier-free guidance scale, baked into the student [1]."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (finished rounds are kept)."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out (removes only the run's own files)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (log lines still go to log.jsonl)."),
) -> None:
    if threads is not None and not 1 <= threads <= 1024:
        raise typer.BadParameter("must be in 1..1024", param_hint="--threads")
    given = dict(from_steps=from_steps, to_steps=to_steps, steps_per_round=steps_per_round, batch_size=batch_size, lr=lr,
                 weighting=weighting, ema_decay=ema_decay, grad_clip=grad_clip, checkpoint_every=checkpoint_every, seed=seed,
                 guidance=guidance)
    record = prepare_distill_run(out, teacher, str(data) if data is not None else None, given, resume=resume, force=force)
    distill(record, out, resume=resume, device=device, threads=threads, progress=not no_progress)


def main() -> None:
    app()
