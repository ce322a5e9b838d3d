"""`pdd-train`: train the v-diffusion teacher (1D U-Net) on a mel cache; resumable, and the same command runs under torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.training.train import launch

HELP = """Train the v-diffusion teacher (a 1D U-Net over packed mels) on a mel cache made by `pdd-data`.

The run folder gets run.json, checkpoint.pt (the latest, written atomically; it is the teacher), log.jsonl, loss.png and
previews/ (DDIM samples as WAV + spectrogram PNG). An existing folder is never overwritten: continue it with --resume or
start over with --force.

[bold]Examples[/bold]

  pdd-train --data data/cache-paper --preset small --out runs/teacher-small --threads 2

  pdd-train --out runs/teacher-small --resume

  pdd-train --data data/cache-tiny --preset tiny --out runs/t --steps 200 --batch-size 8 --preview-every 100

  pdd-train --data data/cache-paper --arch unet2d --out runs/ablation-2d      # ablations: docs/ablations.md

  pdd-train --data data/cache-paper --pack reshape --weighting min-snr --top-width 128 --out runs/ablation-x

  torchrun --nproc-per-node 4 -m pdd.training.cli_train --data data/cache-paper --preset paper --out runs/p --batch-size 128
"""

app = make_app(HELP)


@app.command(help=HELP)
@user_errors
def run(
    out: Path = typer.Option(..., "--out", help="Run folder (created; refused if it holds files, unless --resume/--force)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Mel cache folder from `pdd-data` (required for a new run)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model preset: tiny, small (default) or paper (unet2d: tiny, small)."),
    arch: Optional[str] = typer.Option(
        None, "--arch", help="unet1d (mel bins as channels, default) or unet2d (2D convs over the mel image; implies --pack none)."
    ),
    pack: Optional[str] = typer.Option(
        None, "--pack", help="snake (default: odd chunks time-reversed), reshape (chunks stacked as they are) or none (C = 1)."
    ),
    top_width: Optional[int] = typer.Option(
        None, "--top-width", help="Channels of the 1D U-Net's first level (0 = base width, default); e.g. 128 or 192."
    ),
    condition: Optional[str] = typer.Option(
        None, "--condition", help="A conditioned renderer: notes (the cache's piano rolls), context (known frames), "
        "notes+context, or none (default: an unconditional teacher)."
    ),
    roll_dropout: Optional[float] = typer.Option(None, "--roll-dropout", help="Share of items trained without their notes [0.15]."),
    context_prob: Optional[float] = typer.Option(None, "--context-prob", help="Share of items given known frames [0.5]."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps [default: 20000]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size [default: 16]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate [default: 2e-4]."),
    min_lr_ratio: Optional[float] = typer.Option(None, "--min-lr-ratio", help="Cosine floor as a fraction of --lr [0.05]."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Linear warm-up steps [default: 500]."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay [default: 0.01]."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Gradient-norm clip [default: 1.0]."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="EMA decay of the weights [default: 0.999]."),
    weighting: Optional[str] = typer.Option(
        None, "--weighting", help="Loss weight: snr+1 (= v-MSE, default), truncated, snr, min-snr (Hang et al. 2023)."
    ),
    min_snr_gamma: Optional[float] = typer.Option(None, "--min-snr-gamma", help="γ of --weighting min-snr [default: 5]."),
    time_sampling: Optional[str] = typer.Option(
        None, "--time-sampling", help="continuous (t ~ U(0,1), default) or grid1000 (t = k/1000)."
    ),
    random_shift: Optional[bool] = typer.Option(
        None, "--random-shift/--no-random-shift", help="Random time offsets into the next clip [default: on]."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights, data order and noise [default: 0]."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps per log line [default: 10]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps per checkpoint [default: 500]."),
    keep_every: Optional[int] = typer.Option(
        None, "--keep-every", help="Also keep checkpoints/step-N.pt every N steps, 0 = off [default: 0]."
    ),
    preview_every: Optional[int] = typer.Option(None, "--preview-every", help="Steps per audio preview, 0 = off [2000]."),
    preview_clips: Optional[int] = typer.Option(None, "--preview-clips", help="Clips per preview [default: 2]."),
    preview_steps: Optional[int] = typer.Option(None, "--preview-steps", help="DDIM steps per preview [default: 50]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out (removes only the run's own files)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (log lines still go to log.jsonl)."),
) -> None:
    given = dict(
        data=str(data) if data is not None else None, preset=preset, steps=steps, batch_size=batch_size, lr=lr,
        min_lr_ratio=min_lr_ratio, warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
        ema_decay=ema_decay, weighting=weighting, time_sampling=time_sampling, random_shift=random_shift, seed=seed,
        log_every=log_every, checkpoint_every=checkpoint_every, keep_every=keep_every, preview_every=preview_every,
        preview_clips=preview_clips, preview_steps=preview_steps, precision=precision, device=device, threads=threads,
        arch=arch, pack=pack if pack is not None or arch != "unet2d" or resume else "none", top_width=top_width,
        min_snr_gamma=min_snr_gamma, condition=condition, roll_dropout=roll_dropout, context_prob=context_prob,
    )
    launch(out, given, resume=resume, force=force, progress=not no_progress)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
