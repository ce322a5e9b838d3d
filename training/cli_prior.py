"""`pdd-prior`: train the symbolic prior on score notes, and sample notes from it as MIDI files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.errors import ConfigError

HELP = """The symbolic prior: a small transformer that writes piano notes (onsets, pitches, durations on a beat grid),
which the note-conditioned renderer then plays. Trained on `pdd-data scores` notes of the corpus's default composers.

[bold]Examples[/bold]

  pdd-data scores --out data/scores

  pdd-prior train --data data/scores --heldout-from data/cache-paper --out runs/prior --threads 1

  pdd-prior train --out runs/prior --resume --steps 12000

  pdd-prior sample --ckpt runs/prior/prior.pt --out notes/ -n 4 --seconds 8.9
"""

app = make_app(HELP)


@app.callback()
def _root() -> None:
    """Symbolic prior commands."""


@app.command(help=HELP)
@user_errors
def train(
    out: Path = typer.Option(..., "--out", help="Run folder (created; refused if it holds files, unless --resume/--force)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A `pdd-data scores` folder (required for a new run)."),
    heldout_from: Optional[Path] = typer.Option(
        None, "--heldout-from", help="A mel cache whose held-out works the prior must never read (the evaluation's)."
    ),
    preset: Optional[str] = typer.Option(None, "--preset", help="Prior size: tiny or small (default)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps [default: 6000]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per step [default: 16]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate [default: 1e-3]."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Linear warm-up steps [default: 200]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of weights and windows [default: 0]."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps per log line [default: 20]."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps per checkpoint [200]."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out (removes only the run's own files)."),
) -> None:
    from pdd.training.prior_train import prepare_prior_run, train_prior

    given = dict(data=str(data) if data is not None else None,
                 heldout_from=str(heldout_from) if heldout_from is not None else None, preset=preset, steps=steps,
                 batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed, log_every=log_every,
                 checkpoint_every=checkpoint_every, threads=threads)  # fmt: skip
    config = prepare_prior_run(out, given, resume=resume, force=force)
    train_prior(config, out, resume=resume)


@app.command()
@user_errors
def sample(
    ckpt: Path = typer.Option(..., "--ckpt", help="prior.pt of a `pdd-prior train` run."),
    out: Path = typer.Option(..., "--out", help="Folder for prior-<seed>-<i>.mid (created; files are never overwritten)."),
    n: int = typer.Option(4, "-n", help="Clips."),
    seconds: float = typer.Option(8.9, "--seconds", help="Length of each clip."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws."),
    bpm: float = typer.Option(100.0, "--bpm", help="Tempo the beat grid is played at."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (lower: safer, more repetitive)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus mass kept at each draw."),
) -> None:
    """Write MIDI clips drawn from a trained prior (with PyTorch; the runtime samples its exported graph the same way).

    Example: pdd-prior sample --ckpt runs/prior/prior.pt --out notes/ -n 4
    """
    import numpy as np

    from pdd.runtime.midi import write_midi
    from pdd.runtime.prior_sampler import PriorSettings, events_to_notes
    from pdd.training.prior_torch import sample_with_torch
    from pdd.training.prior_train import load_prior

    if not 1 <= n <= 1000 or not 0.5 <= seconds <= 600:
        raise ConfigError("-n must be 1..1000 and --seconds 0.5..600")
    settings = PriorSettings(temperature=temperature, top_p=top_p, bpm=bpm)
    settings.validate()
    model, _ = load_prior(ckpt)
    targets = [out / f"prior-{seed}-{i}.mid" for i in range(n)]
    taken = [t for t in targets if t.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} exists; choose another --out or --seed")
    out.mkdir(parents=True, exist_ok=True)
    sequences = sample_with_torch(model, n, settings.ticks_for(seconds), settings, np.random.default_rng(seed))
    for target, tokens in zip(targets, sequences):
        notes = events_to_notes(tokens, bpm, seconds)
        write_midi(target, notes)
        print(f"{target}: {notes.size} notes")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
