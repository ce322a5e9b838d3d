"""Any folder of audio → fixed-size clips → normalised log-mels in a mel cache (`pdd-data prepare`).

Every file is read to mono at the preset rate, cut into clips of the preset's length every `hop` seconds (the tail that does
not fill a clip is dropped), near-silent clips are dropped, and the rest go through the runtime's `log_mel` — the one front end.
Train and held-out are split by source file (seeded), so no piece has clips on both sides. One bad file never stops the run:
it is skipped and listed with the reason — unreadable, NaN/inf or absurdly loud samples, a header claiming an absurd rate or
length (see runtime/audio.py), a broken or looping symlink, a FIFO or device, a name that is not UTF-8. The cache is swapped in atomically (see cache.py); the same input, preset and
parameters make the run a no-op; a cache of another preset is only replaced with `force`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.audio import load_audio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import AudioError, ConfigError, PddError
from pdd.runtime.fileio import ensure_writable_dir
from pdd.runtime.mel import log_mel
from pdd.runtime.untrusted import load_json, printable
from pdd.runtime.roll import RollConfig
from pdd.training.cache import DTYPES, INDEX_NAME, CacheError, CacheWriter, open_cache, read_index
from pdd.training.clip_rolls import NoNotes, clip_rolls, file_notes, midi_beside, resolve_mode, roll_source_name
from pdd.training.clip_rolls import check_mode as check_roll_mode

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".opus")
CORPUS_MANIFEST = "corpus.json"
MEL_BATCH = 32  # clips per log_mel call: bounds memory for hour-long files


MAX_HELDOUT_SOURCES = 100_000


@dataclass(frozen=True)
class PrepareParams:
    """How audio becomes clips; recorded in the cache index (a change rebuilds the cache)."""

    hop_seconds: float | None = None  # None: one clip length (no overlap)
    silence_db: float = -50.0  # clips with RMS below this (dBFS) are dropped
    heldout_fraction: float = 0.1  # of source files
    seed: int = 0
    dtype: str = "float16"
    # Source files held out by name instead of by the seeded fraction: another cache's held-out split (--heldout-from), so
    # a cache built from more audio is scored against the same held-out pieces as the one it grows.
    heldout_sources: tuple[str, ...] = ()
    rolls: str = "auto"  # training/clip_rolls.py: piano rolls from the MIDI beside each file, a transcription, or none

    def validate(self) -> None:
        if len(self.heldout_sources) > MAX_HELDOUT_SOURCES or not all(isinstance(n, str) for n in self.heldout_sources):
            raise ConfigError(f"held-out sources must be at most {MAX_HELDOUT_SOURCES} file names")
        if self.hop_seconds is not None and not (math.isfinite(self.hop_seconds) and self.hop_seconds > 0):
            raise ConfigError(f"--hop must be a positive number of seconds, got {self.hop_seconds}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"--heldout must be a fraction in [0, 1), got {self.heldout_fraction}")
        if not -200.0 <= self.silence_db <= 0.0:
            raise ConfigError(f"--silence-db must be in -200..0 dBFS, got {self.silence_db}")
        check_roll_mode(self.rolls)
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def hop_samples(self, config: AudioConfig) -> int:
        """Clip hop in samples, rounded to whole STFT hops so clips of one file share a frame grid (random-shift crops)."""
        if self.hop_seconds is None:
            return config.clip_samples
        frames = max(1, round(self.hop_seconds * config.sample_rate / config.hop_length))
        return frames * config.hop_length


@dataclass
class PrepareReport:
    out: Path
    preset: str
    files_found: int = 0
    files_read: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    clips_kept: int = 0
    clips_dropped: dict[str, int] = field(default_factory=lambda: {"silent": 0})
    silence_db: float = -50.0
    hours_read: float = 0.0
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # split → {"files", "clips", "hours"}
    seconds_wall: float = 0.0
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PrepareReport":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["out"] = Path(known.get("out", "."))
        return cls(**known)

    def summary_line(self) -> str:
        per_split = ", ".join(f"{s} {i['clips']} clips / {i['hours']:.2f} h" for s, i in self.splits.items())
        return (
            f"{self.files_read} of {self.files_found} files read ({self.hours_read:.2f} h), {len(self.skipped_files)} skipped; "
            f"{self.clips_kept} clips kept, {self.clips_dropped['silent']} dropped as silent (< {self.silence_db:g} dBFS); "
            f"{per_split}"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Input discovery and split
# ----------------------------------------------------------------------------------------------------------------------


def find_audio_files(audio_dir: Path, exclude: Path | None = None) -> tuple[list[Path], list[str], list[dict[str, str]]]:
    """Audio files under `audio_dir` (sorted, hidden files and `exclude` left out), notes on what was filtered, and the
    entries skipped with a reason (broken or looping symlinks, FIFOs and devices, names that are not UTF-8).

    A rendered corpus folder (with corpus.json) contributes exactly the works its manifest lists.
    """
    notes: list[str] = []
    skipped: list[dict[str, str]] = []
    listed = _corpus_listing(audio_dir, notes)
    exclude = exclude.resolve() if exclude is not None else None
    found = []

    def unreadable(error: OSError) -> None:
        skipped.append({"file": _relative_name(Path(error.filename or audio_dir), audio_dir),
                        "reason": f"folder cannot be read ({error.strerror or error})"})

    for root, dirs, files in os.walk(audio_dir, onerror=unreadable):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_SUFFIXES:
                continue
            path = root_path / name
            relative = _relative_name(path, audio_dir)
            if listed is not None and relative not in listed:
                continue
            problem = _unusable_entry(path)
            if problem:
                skipped.append({"file": relative, "reason": problem})
            else:
                found.append(path)
    found.sort(key=lambda p: p.relative_to(audio_dir).as_posix())
    return found, notes, skipped


def _corpus_listing(audio_dir: Path, notes: list[str]) -> set[str] | None:
    """The works a pdd corpus.json lists (it is untrusted: only used as a filter), or None without one."""
    manifest = audio_dir / CORPUS_MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = load_json(manifest, CORPUS_MANIFEST)
        if isinstance(data, dict) and data.get("format") == "pdd-corpus/1":
            listed = {str(w["file"]) for w in data["works"]}
            notes.append(f"corpus folder: using the {len(listed)} works listed in {CORPUS_MANIFEST}")
            return listed
    except (PddError, KeyError, TypeError):
        notes.append(f"{CORPUS_MANIFEST} is unreadable; using every audio file in the folder")
    return None


def _relative_name(path: Path, audio_dir: Path) -> str:
    """`path` relative to the input folder, printable (a non-UTF-8 byte shows as \\xNN)."""
    try:
        return printable(path.relative_to(audio_dir).as_posix(), 300)
    except ValueError:
        return printable(path, 300)


def _unusable_entry(path: Path) -> str | None:
    """Why a directory entry cannot be ingested as a file, or None: checked before any read, because a FIFO named
    x.wav would block the reader forever and a name with non-UTF-8 bytes cannot be recorded in the JSON index."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return "file name is not valid UTF-8; rename the file"
    try:
        info = path.stat()
    except FileNotFoundError:
        return "a broken symbolic link (its target does not exist)"
    except OSError as exc:
        return "a symbolic link loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a FIFO, device or socket)"
    return None


def split_by_source(names: list[str], heldout_fraction: float, seed: int,
                    heldout_sources: tuple[str, ...] = ()) -> dict[str, str]:
    """Seeded split of source files: name → "train" | "heldout" (at least one held out when there are ≥ 2 files). With
    `heldout_sources`, exactly those names are held out (ConfigError when none of them is among `names`)."""
    if heldout_sources:
        fixed = set(heldout_sources) & set(names)
        if not fixed:
            raise ConfigError(f"none of the {len(set(heldout_sources))} held-out source files to keep is in this audio folder "
                              f"(e.g. {printable(sorted(heldout_sources)[0], 120)!r}); point --heldout-from at a cache "
                              "of the same folder layout")
        return {name: ("heldout" if name in fixed else "train") for name in names}
    n = len(names)
    n_heldout = int(round(heldout_fraction * n))
    if heldout_fraction > 0 and n >= 2:
        n_heldout = min(max(n_heldout, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    heldout = {names[i] for i in order[:n_heldout]}
    return {name: ("heldout" if name in heldout else "train") for name in names}


def input_fingerprint(files: list[Path], audio_dir: Path, config: AudioConfig, params: PrepareParams) -> str:
    """Hash of everything that decides the cache contents: preset, parameters, and every file's name, size and mtime."""
    digest = hashlib.sha256()
    digest.update(config.to_json().encode())
    digest.update(json.dumps(asdict(params), sort_keys=True).encode())
    for path in files:
        try:
            info = path.stat()
            size, mtime = info.st_size, info.st_mtime_ns
        except OSError:  # gone since listing: the read reports it; the fingerprint only has to differ
            size, mtime = -1, -1
        digest.update(f"{path.relative_to(audio_dir).as_posix()}\0{size}\0{mtime}\n".encode())
        midi = midi_beside(path) if params.rolls != "none" else None
        if midi is not None:  # new or edited notes rebuild the cache as new audio does
            try:
                info = midi.stat()
                digest.update(f"midi\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            except OSError:  # gone since listing: reading reports it; the fingerprint only has to differ
                digest.update(b"midi\0gone\n")
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Cache folder checks
# ----------------------------------------------------------------------------------------------------------------------


def existing_cache_state(out: Path, config: AudioConfig, force: bool) -> dict[str, Any] | None:
    """The current index of `out` if it is a valid cache of the same preset; None if there is nothing (or --force).

    Refuses (CacheError) a folder that is not a cache, a corrupt cache, or a cache of another preset, unless `force`.
    """
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out} exists and is not a folder")
    if not out.is_dir():
        return None
    if not (out / INDEX_NAME).is_file():
        if any(not item.name.startswith(".") for item in out.iterdir()):
            raise CacheError(f"{out} is not empty and is not a mel cache; choose a new or empty --out folder")
        return None
    try:
        index = read_index(out / INDEX_NAME)
        open_cache(out)
    except CacheError as exc:
        if force:
            return None
        raise CacheError(f"{exc} (or pass --force)") from None
    old = AudioConfig.from_dict(index["config"])
    if old != config:
        if force:
            return None
        raise CacheError(
            f"{out} holds a cache of preset {old.name!r} ({_config_diff(old, config)}); "
            f"pass --force to rebuild it as {config.name!r}, or choose another --out"
        )
    return index


def _config_diff(old: AudioConfig, new: AudioConfig) -> str:
    a, b = old.to_dict(), new.to_dict()
    changed = [f"{k} {a[k]} → {b[k]}" for k in a if a[k] != b[k] and k != "name"]
    return ", ".join(changed) if changed else "same settings, other name"


def check_writable(out: Path) -> None:
    ensure_writable_dir(out, CacheError)


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def clip_rms_db(clips: np.ndarray) -> np.ndarray:
    """(n,) RMS level of each clip in dBFS (a full-scale square wave is 0 dB)."""
    power = np.mean(np.square(clips, dtype=np.float64), axis=-1)
    return 10.0 * np.log10(np.maximum(power, 1e-20))


def prepare_cache(
    audio_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: AudioConfig,
    params: PrepareParams = PrepareParams(),
    force: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> PrepareReport:
    """Build (or confirm up to date) the mel cache `out` from `audio_dir`. See the module docstring."""
    started = time.monotonic()
    params.validate()
    audio_dir, out = Path(audio_dir), Path(out)
    if not audio_dir.is_dir():
        raise AudioError(f"{audio_dir}: no such folder")
    files, notes, skipped = find_audio_files(audio_dir, exclude=out)
    if not files:
        listed = f"; skipped: {skipped[0]['file']} ({skipped[0]['reason']})" if skipped else ""
        raise AudioError(f"no audio files ({' '.join(AUDIO_SUFFIXES)}) under {audio_dir}{listed}")
    fingerprint = input_fingerprint(files, audio_dir, config, params)
    index = existing_cache_state(out, config, force)
    if index is not None and index.get("fingerprint") == fingerprint and not force:
        report = PrepareReport.from_dict(index.get("report", {"out": str(out), "preset": config.name}))
        report.out, report.up_to_date = out, True
        return report
    check_writable(out)

    names = [p.relative_to(audio_dir).as_posix() for p in files]
    assignment = split_by_source(names, params.heldout_fraction, params.seed, params.heldout_sources)
    report = PrepareReport(out=out, preset=config.name, files_found=len(files) + len(skipped), silence_db=params.silence_db,
                           notes=notes, skipped_files=list(skipped))
    report.splits = {split: {"files": 0, "clips": 0, "hours": 0.0} for split in ("train", "heldout")}
    hop = params.hop_samples(config)
    roll_mode = resolve_mode(params.rolls, files)
    rolls = RollConfig.for_audio(config) if roll_mode != "none" else None
    with CacheWriter(out, config, dtype=params.dtype, rolls=rolls, roll_source=roll_source_name(roll_mode)) as writer:
        for split in ("train", "heldout"):
            writer.open_split(split)
        for position, (path, name) in enumerate(zip(files, names)):
            if on_progress:
                on_progress(position, len(files), name)
            kept = _ingest_file(path, name, assignment[name], config, hop, params.silence_db, writer, report, roll_mode)
            if kept:
                report.splits[assignment[name]]["files"] += 1
        if on_progress:
            on_progress(len(files), len(files), "done")
        for split, count in writer.counts().items():
            report.splits[split]["clips"] = count
            report.splits[split]["hours"] = round(count * config.clip_seconds / 3600.0, 4)
        report.clips_kept = sum(writer.counts().values())
        report.hours_read = round(report.hours_read, 4)
        report.seconds_wall = round(time.monotonic() - started, 2)
        if report.clips_kept == 0:
            raise AudioError(f"no usable clips in {audio_dir} ({report.summary_line()}); nothing was written")
        writer.commit(
            {
                "fingerprint": fingerprint,
                "input": str(audio_dir.resolve()),
                "params": {**asdict(params), "hop_samples": hop},
                "split_by": "source file",
                "report": report.to_dict(),
            }
        )
    return report


def _ingest_file(
    path: Path, name: str, split: str, config: AudioConfig, hop: int, silence_db: float,
    writer: CacheWriter, report: PrepareReport, roll_mode: str = "none",
) -> int:  # fmt: skip
    """Read one file into the writer; on any problem record it in the report and return 0. Returns clips kept."""
    try:
        wave = load_audio(path, config.sample_rate)
    except AudioError as exc:
        report.skipped_files.append({"file": name, "reason": _reason(str(exc), path)})
        return 0
    except OSError as exc:  # vanished or became unreadable since the folder was listed
        report.skipped_files.append({"file": name, "reason": f"cannot be read ({exc.strerror or exc})"})
        return 0
    except MemoryError:
        report.skipped_files.append({"file": name, "reason": "too large to load into memory"})
        return 0
    report.files_read += 1
    report.hours_read += wave.shape[0] / config.sample_rate / 3600.0
    if wave.shape[0] < config.clip_samples:
        seconds = wave.shape[0] / config.sample_rate
        report.skipped_files.append(
            {"file": name, "reason": f"shorter than one clip ({seconds:.2f} s < {config.clip_seconds:.2f} s)"}
        )
        return 0
    notes = None
    if writer.rolls is not None:
        try:
            notes = file_notes(path, wave, config, roll_mode)
        except NoNotes as exc:
            report.skipped_files.append({"file": name, "reason": str(exc)})
            return 0
    starts = np.arange(0, wave.shape[0] - config.clip_samples + 1, hop, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(wave, config.clip_samples)
    kept = 0
    for first in range(0, starts.shape[0], MEL_BATCH):
        batch_starts = starts[first : first + MEL_BATCH]
        clips = np.ascontiguousarray(windows[batch_starts])
        loud = clip_rms_db(clips) >= silence_db
        report.clips_dropped["silent"] += int(np.count_nonzero(~loud))
        if np.any(loud):
            rolls = None if notes is None else clip_rolls(notes, batch_starts[loud], config, writer.rolls)
            writer.add(split, log_mel(clips[loud], config), name, batch_starts[loud], rolls)
            kept += int(np.count_nonzero(loud))
    if kept == 0:
        report.skipped_files.append({"file": name, "reason": f"every clip is below the silence threshold ({silence_db:g} dBFS)"})
    return kept


def _reason(message: str, path: Path) -> str:
    """An AudioError message without the path prefix (the report already names the file)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
