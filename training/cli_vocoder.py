"""`pdd-vocoder train`: fit the learned vocoder (mel → STFT magnitude and phase → inverse STFT) on corpus audio."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.errors import ConfigError
from pdd.training.vocoder_train import train_vocoder

HELP = """Train pdd's learned vocoder: it turns a normalised log-mel (what the diffusion model writes) back into audio,
replacing Griffin-Lim. Trained on audio against its own log-mels, with the runtime's exact front end.

--data is an audio folder, or a mel cache from `pdd-data prepare` (then its training split's source audio is used and
the held-out files stay unseen; name the audio folder the cache was made from with --audio-dir: a cache's index is never
trusted to choose which folder is read). The run folder gets run.json, vocoder.pt (latest, atomic; export it with
`pdd-export --vocoder-ckpt`), log.jsonl, loss.png and previews/step-N.wav. Continue with --resume; start over with --force.

[bold]Examples[/bold]

  pdd-vocoder train --data data/cache-paper --audio-dir data/corpus --out runs/vocoder --threads 1

  pdd-vocoder train --out runs/vocoder --resume --steps 40000

  pdd-vocoder train --data data/corpus --preset tiny --out runs/v-tiny --steps 200
"""

MAX_THREADS = 1024

app = make_app(HELP)


@app.callback()
def _root() -> None:
    """Learned vocoder commands."""


@app.command(help=HELP)
@user_errors
def train(
    out: Path = typer.Option(..., "--out", help="Run folder (created; refused if it holds files, unless --resume/--force)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Audio folder or mel cache (required for a new run)."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", help="With a mel cache --data: the audio folder it was "
                                             "made from (needed when that folder lies outside the cache)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Vocoder size: tiny or small (default, 3.1 M params)."),
    audio_preset: Optional[str] = typer.Option(None, "--audio-preset", help="Audio preset of the mels [default: paper]."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps [default: 20000]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Segments per step [default: 16]."),
    segment_frames: Optional[int] = typer.Option(None, "--segment-frames", help="Mel frames per segment [default: 32]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate [default: 5e-4]."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Linear warm-up steps [default: 500]."),
    ema: Optional[float] = typer.Option(None, "--ema", help="EMA decay of the exported weights [default: 0.999]."),
    input_noise: Optional[float] = typer.Option(None, "--input-noise", help="Std of noise added to input mels [0]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights and data stream [default: 0]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps per checkpoint [500]."),
    preview_every: Optional[int] = typer.Option(None, "--preview-every", help="Steps per preview WAV [2000]."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps per log line [50]."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out (removes only the run's own files)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be in [1, {MAX_THREADS}], got {threads}")
    given = dict(data=str(data) if data is not None else None,
                 audio_dir=str(audio_dir) if audio_dir is not None else None, preset=preset, audio_preset=audio_preset, steps=steps,
                 batch_size=batch_size, segment_frames=segment_frames, lr=lr, warmup=warmup, ema=ema,
                 input_noise=input_noise, seed=seed, checkpoint_every=checkpoint_every, preview_every=preview_every,
                 log_every=log_every)
    train_vocoder(out, given, resume=resume, force=force, threads=threads, progress=not no_progress)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
