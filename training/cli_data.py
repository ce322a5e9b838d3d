"""`pdd-data`: render the bundled score corpus to piano audio, and turn any folder of audio into a mel cache for training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pdd.runtime.cli_common import make_app, user_errors
from pdd.runtime.untrusted import printable

if TYPE_CHECKING:  # the command modules import lazily so `pdd-data --help` stays fast
    from pdd.training.prepare import PrepareReport

app = make_app(
    "Training data for pdd.\n\n"
    "Examples:\n\n"
    "  pdd-data corpus --out data/corpus --max-hours 5\n\n"
    "  pdd-data prepare data/corpus --out data/cache-paper --preset paper"
)
console = Console(stderr=True)


def _progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=transient,
    )


@app.command()
@user_errors
def corpus(
    out: Path = typer.Option(..., "--out", help="Output folder (created; re-running with the same arguments skips done work)."),
    composers: Optional[str] = typer.Option(
        None, "--composers", help="Comma-separated music21 corpus composers (default: bach, beethoven, mozart, haydn, …)."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many works (interleaved across composers)."),
    max_hours: Optional[float] = typer.Option(
        None, "--max-hours", help="Stop once the selection's leading works reach this many hours of audio."
    ),
    soundfont: Optional[Path] = typer.Option(None, "--soundfont", help="General-MIDI .sf2 (default: Debian's TimGM6mb)."),
    sample_rate: int = typer.Option(22050, "--sample-rate", help="Render rate in Hz (the paper preset's rate)."),
    peak_db: float = typer.Option(-1.0, "--peak-db", help="Peak-normalise every work to this level (dBFS)."),
    workers: int = typer.Option(2, "--workers", help="Scores converted and rendered at once (one process each)."),
    time_limit: float = typer.Option(
        120.0, "--time-limit", help="Seconds per score before it is skipped (re-runs retry it only with a longer limit)."
    ),
    force: bool = typer.Option(False, "--force", help="Re-render a folder that was rendered with other settings."),
) -> None:
    """Render music21's bundled scores to mono piano FLAC with FluidSynth, plus a corpus.json manifest.

    Example: pdd-data corpus --out data/corpus --composers bach,mozart --limit 20
    """
    from pdd.training.corpus import DEFAULT_COMPOSERS, render_corpus, report_dict, select_works

    chosen = composers.split(",") if composers else list(DEFAULT_COMPOSERS)
    total = len(select_works(chosen, limit))
    with _progress() as progress:
        task = progress.add_task("rendering", total=total, note="")

        def advance(work_id: str, status: str) -> None:
            progress.update(task, advance=1, note=_shown(f"{status:>6} {work_id}"))

        report = render_corpus(
            out, chosen, limit=limit, soundfont=soundfont, sample_rate=sample_rate, peak_dbfs=peak_db,
            workers=workers, time_limit=time_limit, max_hours=max_hours, force=force, on_progress=advance,
        )  # fmt: skip
    summary = report_dict(report)
    console.print(
        f"{summary['works']} works, {summary['hours']:.2f} h of audio in {_shown(out)} "
        f"({summary['rendered']} rendered, {summary['reused']} already there, {len(report.skipped)} skipped) "
        f"in {summary['seconds_wall']:.0f} s"
    )
    if report.skipped:
        table = Table("skipped work", "reason", title="skipped")
        for item in report.skipped:
            table.add_row(_shown(item["id"]), _shown(item["reason"]))
        console.print(table)


@app.command()
@user_errors
def scores(
    out: Path = typer.Option(..., "--out", help="Output folder for scores.npz and scores.json (created)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many works (interleaved across composers)."),
    workers: int = typer.Option(1, "--workers", help="Scores parsed at once (one process each)."),
    time_limit: float = typer.Option(90.0, "--time-limit", help="Seconds per score before it is skipped."),
) -> None:
    """Notes of music21's scores by the corpus's default composers, on a beat grid: the symbolic prior's training data.

    Only the default composers' works are read (held-out evaluation is scored on other composers), all of them unless
    --limit; a score that fails to parse or runs out of time is skipped and listed.

    Example: pdd-data scores --out data/scores
    """
    from pdd.training.corpus import DEFAULT_COMPOSERS, select_works
    from pdd.training.score_notes import ScoresError, extract_scores

    if workers < 1 or workers > 64:
        raise ScoresError("--workers must be 1..64")
    total = len(select_works(DEFAULT_COMPOSERS, limit))
    with _progress() as progress:
        task = progress.add_task("parsing", total=total, note="")

        def advance(work_id: str, status: str) -> None:
            progress.update(task, advance=1, note=_shown(f"{status:>6} {work_id}"))

        listing = extract_scores(out, DEFAULT_COMPOSERS, limit=limit, workers=workers, time_limit=time_limit,
                                 on_result=advance)  # fmt: skip
    console.print(f"{len(listing['works'])} works, {listing['notes']} notes in {_shown(out)} "
                  f"({len(listing['skipped'])} skipped)")  # fmt: skip


@app.command()
@user_errors
def prepare(
    audio_dir: Path = typer.Argument(..., help="Folder of audio (WAV/FLAC/OGG/MP3, nested folders)."),
    out: Path = typer.Option(..., "--out", help="Cache folder (created; re-running with the same input is a no-op)."),
    preset: str = typer.Option("paper", "--preset", help="Audio preset: paper or tiny."),
    hop: Optional[float] = typer.Option(
        None, "--hop", help="Seconds between clip starts (default: one clip length, no overlap)."
    ),
    silence_db: float = typer.Option(-50.0, "--silence-db", help="Drop clips whose RMS is below this level (dBFS)."),
    heldout: float = typer.Option(
        0.1, "--heldout", "--heldout-fraction", help="Fraction of source files held out for evaluation."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/held-out split by source file."),
    heldout_from: Optional[Path] = typer.Option(
        None, "--heldout-from", help="Hold out exactly the source files another cache held out (e.g. a cache of a smaller "
        "corpus this folder grows), so both are scored against the same pieces; replaces --heldout/--seed."
    ),
    dtype: str = typer.Option("float16", "--dtype", help="float16 (half the disk) or float32."),
    rolls: str = typer.Option(
        "auto", "--rolls", help="Piano roll per clip: auto (from the .mid beside each audio file when there are any), "
        "midi (every file needs one), transcribe (basic-pitch notes), none."
    ),
    transcribe: bool = typer.Option(False, "--transcribe", help="Same as --rolls transcribe: notes of audio without MIDI."),
    force: bool = typer.Option(False, "--force", help="Rebuild a cache made with another preset, or a corrupt one."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Cut a folder of audio into preset-sized clips and cache their normalised log-mels (train / held-out by source file).

    With MIDI files beside the audio (as `pdd-data corpus` writes them) every clip also gets its piano roll, the notes
    the renderer learns to play; --transcribe derives them from the audio with basic-pitch instead.

    Example: pdd-data prepare ~/music --out data/cache-paper --preset paper --hop 4.5
    """
    from pdd.runtime.config import get_preset
    from pdd.training.prepare import PrepareParams, prepare_cache

    config = get_preset(preset)
    kept = heldout_sources_of(heldout_from) if heldout_from is not None else ()
    params = PrepareParams(hop_seconds=hop, silence_db=silence_db, heldout_fraction=heldout, seed=seed, dtype=dtype,
                           heldout_sources=kept, rolls="transcribe" if transcribe else rolls)
    with _progress(transient=True) as progress:
        task = progress.add_task("reading", total=None, note="")

        def advance(done: int, total: int, name: str) -> None:
            progress.update(task, completed=done, total=total, note=_shown(name))

        report = prepare_cache(audio_dir, out, config, params, force=force, on_progress=advance)
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    _print_prepare_report(report)


def heldout_sources_of(cache_path: Path) -> tuple[str, ...]:
    """The source files a cache held out, sorted (CacheError when it is not a readable cache or holds none)."""
    from pdd.training.cache import CacheError, open_cache

    cache = open_cache(cache_path)
    names = tuple(sorted(set(cache.sources("heldout")))) if "heldout" in cache.splits else ()
    if not names:
        raise CacheError(f"--heldout-from {cache_path}: that cache has no held-out clips")
    return names


def _shown(text: object) -> str:
    """Text from the file system or an index, safe for rich: control characters escaped, [markup] not interpreted."""
    return escape(printable(text))


def _print_prepare_report(report: PrepareReport) -> None:
    if report.up_to_date:
        console.print(f"{_shown(report.out)} is up to date ({_shown(report.summary_line())})")
        return
    table = Table("split", "source files", "clips", "hours", title=f"mel cache {_shown(report.out)}")
    for split, info in report.splits.items():
        table.add_row(split, str(info["files"]), str(info["clips"]), f"{info['hours']:.3f}")
    console.print(table)
    console.print(_shown(report.summary_line()))
    if report.skipped_files:
        skipped = Table("skipped file", "reason", title="files skipped")
        for item in report.skipped_files:
            skipped.add_row(_shown(item["file"]), _shown(item["reason"]))
        console.print(skipped)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
