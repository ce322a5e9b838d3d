"""Render real piano music offline: music21's bundled score corpus → MIDI (every part on acoustic piano) → FluidSynth → FLAC.

No data set can be downloaded here, but a score corpus ships inside the music21 wheel and a synthesiser with a General-MIDI
soundfont ships in Debian. Each score is converted and rendered in its own forked process (two at a time by default) under a
time limit, because some scores take minutes to parse; a score that fails or runs out of time is skipped and listed with the
reason. Output: OUT/<composer>/<work>.flac (mono, peak-normalised) and OUT/corpus.json, a manifest of every work with its
duration and sha256. The same arguments give the same files and manifest; a re-run skips work that is already done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.fileio import ensure_writable_dir
from pdd.training.cache import write_json_atomic
from pdd.training.process_pool import TIMEOUT_PREFIX, run_limited
from pdd.training.render_score import peak_normalise, render_midi, score_to_midi

MANIFEST_NAME = "corpus.json"
MANIFEST_FORMAT = "pdd-corpus/1"
# Bumped when pdd renders scores it used to fail on (2: badly formed repeats play as written), so a re-run retries the
# failures an older pdd remembered instead of skipping them again.
RENDERER_VERSION = 2
APT_INSTALL = "sudo apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont"

# Keyboard-friendly composers of music21's corpus (string quartets and chorales render well on one piano).
DEFAULT_COMPOSERS = (
    "bach",
    "beethoven",
    "mozart",
    "haydn",
    "chopin",
    "joplin",
    "schumann_clara",
    "handel",
    "schubert",
    "cpebach",
    "corelli",
    "weber",
    "beach",
)
# Notated formats only (the corpus also holds roman-numeral analyses, .rntxt, which are not music to play).
# When one work exists in several formats, the lowest rank wins.
SCORE_SUFFIX_RANK = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".krn": 3, ".abc": 4, ".mid": 5, ".midi": 5}
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)
# Failures are remembered across runs (the same music21 gives the same error); a time-out is retried with a longer limit.


class CorpusError(PddError):
    """The corpus cannot be rendered: missing synthesiser/soundfont, bad selection, or an output folder we must not touch."""


@dataclass(frozen=True)
class Work:
    """One score of the corpus: `id` is its corpus path without the suffix, e.g. "bach/bwv66.6"."""

    id: str
    composer: str
    source: str  # absolute path of the score file


@dataclass(frozen=True)
class RenderSettings:
    """Everything that decides the rendered audio; a corpus folder is only ever extended with the same settings."""

    sample_rate: int = 22050
    peak_dbfs: float = -1.0
    soundfont: str = ""
    soundfont_sha256: str = ""

    def identity(self) -> dict[str, Any]:
        """The settings that must match for existing renders to be reused (the soundfont by content, not by path)."""
        return {"sample_rate": self.sample_rate, "peak_dbfs": self.peak_dbfs, "soundfont_sha256": self.soundfont_sha256}


@dataclass
class CorpusReport:
    out: Path
    rendered: list[dict[str, Any]] = field(default_factory=list)  # newly rendered this run
    reused: list[dict[str, Any]] = field(default_factory=list)  # already present and intact
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"id", "reason"}
    seconds_wall: float = 0.0

    @property
    def works(self) -> list[dict[str, Any]]:
        return self.rendered + self.reused

    @property
    def hours(self) -> float:
        return sum(w["seconds"] for w in self.works) / 3600.0


# ----------------------------------------------------------------------------------------------------------------------
# Tools and selection
# ----------------------------------------------------------------------------------------------------------------------


def find_fluidsynth() -> str:
    """Path of the fluidsynth executable, or a CorpusError naming the install command."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise CorpusError(f"the FluidSynth synthesiser is not installed; install it with: {APT_INSTALL}")
    return exe


def find_soundfont(path: str | os.PathLike[str] | None = None) -> Path:
    """The soundfont to render with: `path` if given, else the first General-MIDI soundfont Debian installs."""
    if path is not None:
        chosen = Path(path)
        if not chosen.is_file():
            raise CorpusError(f"soundfont {chosen} does not exist")
        return chosen
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate).resolve()
    raise CorpusError(f"no General-MIDI soundfont found; install one with: {APT_INSTALL} (or pass --soundfont PATH)")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_root() -> Path:
    """The folder of music21's bundled corpus (inside the installed wheel)."""
    from music21 import corpus

    return Path(corpus.__file__).resolve().parent


def composer_works(composer: str) -> list[Work]:
    """All notated works of one composer, sorted by id, one file per work (preferred format)."""
    from music21 import corpus

    best: dict[str, Path] = {}
    for path in (Path(p) for p in corpus.getComposer(composer)):
        rank = SCORE_SUFFIX_RANK.get(path.suffix.lower())
        if rank is None:
            continue
        work_id = _corpus_relative(str(path)).rsplit(".", 1)[0]
        if work_id not in best or rank < SCORE_SUFFIX_RANK[best[work_id].suffix.lower()]:
            best[work_id] = path
    return [Work(work_id, composer, str(best[work_id])) for work_id in sorted(best)]


def select_works(composers: Iterable[str] = DEFAULT_COMPOSERS, limit: int | None = None) -> list[Work]:
    """Works of the chosen composers, interleaved round-robin (so a --limit still spans composers), at most `limit`."""
    composers = [c.strip() for c in composers if c.strip()]
    if not composers:
        raise CorpusError("no composers chosen")
    if limit is not None and limit <= 0:
        raise CorpusError(f"--limit must be positive, got {limit}")
    per_composer = []
    for composer in dict.fromkeys(composers):
        works = composer_works(composer)
        if not works:
            raise CorpusError(f"music21's corpus has no scores by {composer!r}; try e.g. {', '.join(DEFAULT_COMPOSERS[:5])}")
        per_composer.append(works)
    chosen: list[Work] = []
    for rank in range(max(len(w) for w in per_composer)):
        chosen.extend(works[rank] for works in per_composer if rank < len(works))
    return chosen[:limit] if limit is not None else chosen


# ----------------------------------------------------------------------------------------------------------------------
# One work: score → MIDI → audio (runs inside a child process)
# ----------------------------------------------------------------------------------------------------------------------


def output_path(out: Path, work: Work) -> Path:
    return out / f"{work.id}.flac"


def render_work(work: Work, out: Path, settings: RenderSettings, fluidsynth: str) -> dict[str, Any]:
    """Score → FLAC at output_path (written atomically); returns the manifest entry."""
    target = output_path(out, work)
    warnings.simplefilter("ignore")  # music21 warns about every overfull measure; failures still raise
    with tempfile.TemporaryDirectory(prefix="pdd-corpus-") as scratch_name:
        scratch = Path(scratch_name)
        midi_path = scratch / "score.mid"
        score_to_midi(work.source, midi_path)
        wave = peak_normalise(render_midi(midi_path, settings.sample_rate, settings.soundfont, fluidsynth, scratch),
                              settings.peak_dbfs)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The MIDI that was rendered travels beside its audio: `pdd-data prepare` cuts a piano roll per clip from it.
        # Written first, so a FLAC never exists without its notes.
        midi_target = midi_path_of(target)
        shutil.copyfile(midi_path, midi_target.with_name(f".{midi_target.name}.tmp"))
        os.replace(midi_target.with_name(f".{midi_target.name}.tmp"), midi_target)
        tmp = target.with_name(f".{target.name}.tmp")
        sf.write(str(tmp), wave, settings.sample_rate, format="FLAC", subtype="PCM_16")
        os.replace(tmp, target)
    return work_entry(work, out, target, seconds=wave.shape[0] / settings.sample_rate)


def midi_path_of(audio: Path) -> Path:
    """The score's MIDI beside its render: OUT/<composer>/<work>.mid next to <work>.flac."""
    return audio.with_suffix(".mid")


def work_entry(work: Work, out: Path, target: Path, seconds: float) -> dict[str, Any]:
    return {
        "id": work.id,
        "composer": work.composer,
        "source": _corpus_relative(work.source),
        "file": target.relative_to(out).as_posix(),
        "seconds": round(seconds, 3),
        "sha256": file_sha256(target),
        "midi": midi_path_of(target).relative_to(out).as_posix(),
        "midi_sha256": file_sha256(midi_path_of(target)),
    }


def _corpus_relative(source: str) -> str:
    """"bach/bwv66.6.mxl" for a file of music21's corpus; the bare file name for anything else."""
    path = Path(source).resolve()
    try:
        return path.relative_to(corpus_root()).as_posix()
    except ValueError:
        return path.name


# ----------------------------------------------------------------------------------------------------------------------
# The whole corpus
# ----------------------------------------------------------------------------------------------------------------------


def load_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path} is corrupt ({type(exc).__name__}); remove it or choose a new --out") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CorpusError(f"{path} is not a {MANIFEST_FORMAT} manifest; choose a new --out")
    return manifest


def check_output_folder(out: Path, settings: RenderSettings, force: bool) -> dict[str, Any] | None:
    """The existing manifest (if any) after refusing folders we must not write into or settings that differ."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out} exists and is not a folder")
    manifest = load_manifest(out) if out.is_dir() else None
    if manifest is None and out.is_dir() and any(out.iterdir()):
        raise CorpusError(f"{out} is not empty and holds no {MANIFEST_NAME}; choose a new or empty --out folder")
    if manifest is not None and manifest.get("settings", {}).get("identity") != settings.identity():
        if not force:
            raise CorpusError(
                f"{out} was rendered with other settings ({_settings_diff(manifest, settings)}); "
                "choose a new --out or pass --force to re-render"
            )
        manifest = None  # --force: nothing is reused
    ensure_writable_dir(out, CorpusError)
    return manifest


def _settings_diff(manifest: dict[str, Any], settings: RenderSettings) -> str:
    old = manifest.get("settings", {}).get("identity", {})
    new = settings.identity()
    return ", ".join(f"{k} {old.get(k)!r} → {new[k]!r}" for k in new if old.get(k) != new[k]) or "unknown"


def reusable_entry(previous: dict[str, Any] | None, work: Work, out: Path, verify: bool = True) -> dict[str, Any] | None:
    """The previous manifest entry of `work` if its file is still there and intact."""
    if previous is None:
        return None
    for entry in previous.get("works", []):
        if entry.get("id") == work.id:
            target = out / entry.get("file", "")
            midi = out / str(entry.get("midi", ""))
            if "midi" not in entry or not midi.is_file():
                return None  # rendered before MIDI was kept: render again so its notes exist
            if target.is_file() and (not verify or (file_sha256(target) == entry.get("sha256")
                                                    and file_sha256(midi) == entry.get("midi_sha256"))):
                return entry
    return None


def remembered_failure(previous: dict[str, Any] | None, work: Work, time_limit: float) -> str | None:
    """A previous run's failure of `work` that would happen again: any parse error of the same renderer (the same music21
    gives the same error), and a time-out unless `time_limit` is now longer than the one it ran out of. Failures recorded
    by an older renderer are retried."""
    if previous is None or previous.get("renderer", 1) != RENDERER_VERSION:
        return None
    for entry in previous.get("skipped", []):
        if entry.get("id") != work.id:
            continue
        reason = str(entry.get("reason", ""))
        if reason.startswith(TIMEOUT_PREFIX):
            try:
                old_limit = float(reason[len(TIMEOUT_PREFIX) :].split()[1])
            except (IndexError, ValueError):
                return None
            return reason if time_limit <= old_limit else None
        return reason
    return None


def write_manifest(out: Path, works: list[Work], done: dict[str, dict[str, Any]], failed: dict[str, str],
                   settings: RenderSettings, selection: dict[str, Any]) -> None:  # fmt: skip
    """corpus.json in selection order; no timestamps or timings, so the same arguments give the same bytes."""
    entries = [done[w.id] for w in works if w.id in done]
    skipped = [{"id": w.id, "reason": failed[w.id]} for w in works if w.id in failed]
    manifest = {
        "format": MANIFEST_FORMAT,
        "renderer": RENDERER_VERSION,
        "settings": {
            "identity": settings.identity(),
            "soundfont": Path(settings.soundfont).name,
            "music21": _music21_version(),
            "channels": 1,
            "subtype": "PCM_16",
        },
        "selection": selection,
        "hours": round(sum(e["seconds"] for e in entries) / 3600.0, 4),
        "works": entries,
        "skipped": skipped,
    }
    write_json_atomic(out / MANIFEST_NAME, manifest)


def _music21_version() -> str:
    import music21

    return str(music21.__version__)


def render_corpus(
    out: str | os.PathLike[str],
    composers: Iterable[str] = DEFAULT_COMPOSERS,
    limit: int | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = 22050,
    peak_dbfs: float = -1.0,
    workers: int = 2,
    time_limit: float = 120.0,
    max_hours: float | None = None,
    force: bool = False,
    on_progress: Callable[[str, str], None] | None = None,
) -> CorpusReport:
    """Render the selection into `out`; returns what was rendered, reused and skipped. See the module docstring.

    `max_hours` keeps the shortest prefix of the selection (in selection order) that reaches that much audio: rendering
    stops there, and the manifest lists only that prefix, so the result does not depend on which process finished first.
    """
    started = time.monotonic()
    if workers <= 0:
        raise ConfigError(f"workers must be positive, got {workers}")
    if time_limit <= 0:
        raise ConfigError(f"the per-score time limit must be positive, got {time_limit}")
    if not -40.0 <= peak_dbfs <= 0.0:
        raise ConfigError(f"peak level must be in -40..0 dBFS, got {peak_dbfs}")
    if max_hours is not None and max_hours <= 0:
        raise ConfigError(f"--max-hours must be positive, got {max_hours}")
    if not 8000 <= sample_rate <= 96000:
        raise ConfigError(f"sample rate must be in 8000..96000 Hz, got {sample_rate}")
    fluidsynth = find_fluidsynth()
    font = find_soundfont(soundfont)
    settings = RenderSettings(sample_rate, float(peak_dbfs), str(font), file_sha256(font))
    out = Path(out)
    works = select_works(composers, limit)
    previous = check_output_folder(out, settings, force)
    selection = {
        "composers": list(dict.fromkeys(c.strip() for c in composers if c.strip())),
        "limit": limit,
        "max_hours": max_hours,
    }

    report = CorpusReport(out)
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    todo = []
    for work in works:
        entry = reusable_entry(previous, work, out)
        reason = remembered_failure(previous, work, time_limit)
        if entry is not None:
            done[work.id] = entry
            report.reused.append(entry)
        elif reason is not None:
            failed[work.id] = reason
            report.skipped.append({"id": work.id, "reason": reason})
        else:
            todo.append(work)
    if on_progress:
        for entry in report.reused:
            on_progress(entry["id"], "reused")

    by_id = {w.id: w for w in works}
    last_write = [time.monotonic()]

    def collect(key: str, status: str, value: Any) -> None:
        if status == "ok":
            done[key] = value
            report.rendered.append(value)
        else:
            failed[key] = value
            report.skipped.append({"id": key, "reason": value})
            stale = output_path(out, by_id[key])
            stale.with_name(f".{stale.name}.tmp").unlink(missing_ok=True)
        if on_progress:
            on_progress(key, status)
        if time.monotonic() - last_write[0] > 10.0:  # keep progress durable during long renders
            write_manifest(out, works, done, failed, settings, selection)
            last_write[0] = time.monotonic()

    def finished_prefix() -> int | None:
        """Length of the selection prefix that is finished and reaches max_hours, if there is one."""
        if max_hours is None:
            return None
        total = 0.0
        for position, work in enumerate(works):
            if work.id in done:
                total += done[work.id]["seconds"]
            elif work.id not in failed:
                return None
            if total >= max_hours * 3600.0:
                return position + 1
        return None

    tasks = [(w.id, render_work, (w, out, settings, fluidsynth)) for w in todo]
    try:
        run_limited(tasks, workers, time_limit, collect, should_stop=lambda: finished_prefix() is not None)
        cut = finished_prefix()
        if cut is not None:
            kept = {w.id for w in works[:cut]}
            works = works[:cut]
            report.rendered = [e for e in report.rendered if e["id"] in kept]
            report.reused = [e for e in report.reused if e["id"] in kept]
            report.skipped = [e for e in report.skipped if e["id"] in kept]
    finally:
        write_manifest(out, works, done, failed, settings, selection)
        for leftover in [*out.rglob(".*.flac.tmp"), *out.rglob(".*.mid.tmp")]:  # from renders killed mid-write (time-out, --max-hours reached, Ctrl-C)
            leftover.unlink(missing_ok=True)
    report.seconds_wall = time.monotonic() - started
    order = {w.id: i for i, w in enumerate(works)}
    report.rendered.sort(key=lambda e: order[e["id"]])
    report.skipped.sort(key=lambda e: order[e["id"]])
    return report


def report_dict(report: CorpusReport) -> dict[str, Any]:
    return {
        "out": str(report.out),
        "works": len(report.works),
        "rendered": len(report.rendered),
        "reused": len(report.reused),
        "skipped": report.skipped,
        "hours": round(report.hours, 4),
        "seconds_wall": round(report.seconds_wall, 1),
    }


__all__ = [
    "APT_INSTALL",
    "DEFAULT_COMPOSERS",
    "CorpusError",
    "CorpusReport",
    "RenderSettings",
    "Work",
    "find_fluidsynth",
    "find_soundfont",
    "render_corpus",
    "report_dict",
    "run_limited",
    "score_to_midi",
    "select_works",
]
