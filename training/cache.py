"""The mel cache: normalised log-mel clips on disk, memory-mapped by the trainer and read with numpy by evaluation.

Layout of a cache folder (numpy only, so evaluation and tools never need torch):

    index.json            format "pdd-melcache/1", the audio preset, dtype, per split: clip count, shard file, the source file
                          and start sample of every clip; the parameters and report of the run that built it
    train-<build>.bin     (N, n_mels, frames) raw float16/float32, C order — one shard per split and build
    heldout-<build>.bin
    train-<build>.roll.bin  (N, 2, pitches, frames) uint8 piano rolls of the same clips (runtime/roll.py), when the index
                          has a "roll" section: the roll config and where the notes came from ("midi" or "transcription")

Every build writes new shard files under fresh names and swaps `index.json` in last (temp file + os.replace), so an interrupted
run leaves the previous cache intact and readable; shards no longer referenced are removed only after the new index is in place.

`index.json` is untrusted input: its shard names must resolve inside the cache folder, its audio preset within bounds,
and every count must agree with the shard's size before anything is memory-mapped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime import fileio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.mel import log_mel
from pdd.runtime.roll import RollConfig
from pdd.runtime.untrusted import check_audio_bounds, load_json, printable, resolve_inside

CACHE_FORMAT = "pdd-melcache/1"
INDEX_NAME = "index.json"
SPLITS = ("train", "heldout")
DTYPES = ("float16", "float32")
MAX_CLIP_OFFSET = 1 << 40  # samples: days of audio at any rate, and far inside int64
ROLL_SOURCES = ("midi", "transcription")


class CacheError(PddError):
    """A mel cache that is missing, corrupt, or made with another preset."""


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------


class MelCache:
    """A built cache: `clips(split)` is a read-only memory map of (N, n_mels, frames) values in [-1, 1]."""

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path = path
        self.index = index
        self.config: AudioConfig = AudioConfig.from_dict(index["config"])
        self.dtype = np.dtype(index["dtype"])
        self.splits: list[str] = list(index["splits"])
        self.roll_config: RollConfig | None = RollConfig.from_dict(index["roll"]["config"]) if "roll" in index else None
        self.roll_source: str | None = index["roll"]["source"] if "roll" in index else None
        self._maps: dict[str, np.ndarray] = {}
        self._roll_maps: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_clips(s)}" for s in self.splits)
        return f"MelCache({str(self.path)!r}, preset={self.config.name!r}, {counts})"

    def _split(self, split: str) -> dict[str, Any]:
        try:
            return self.index["splits"][split]
        except KeyError:
            raise CacheError(f"{self.path}: no split {split!r}; it has: {', '.join(self.splits)}") from None

    def num_clips(self, split: str) -> int:
        return int(self._split(split)["clips"])

    def hours(self, split: str) -> float:
        """Hours of audio the clips of `split` cover (overlapping clips counted once per clip)."""
        return self.num_clips(split) * self.config.clip_seconds / 3600.0

    @property
    def clip_shape(self) -> tuple[int, int]:
        return (self.config.n_mels, self.config.frames)

    def clips(self, split: str) -> np.ndarray:
        """(N, n_mels, frames) read-only memory map (never loaded whole)."""
        if split not in self._maps:
            info = self._split(split)
            shape = (int(info["clips"]), *self.clip_shape)
            if shape[0] == 0:
                self._maps[split] = np.zeros(shape, dtype=self.dtype)
            else:
                self._maps[split] = np.memmap(self.shard_path(split), dtype=self.dtype, mode="r", shape=shape)
        return self._maps[split]

    @property
    def has_rolls(self) -> bool:
        return self.roll_config is not None

    def rolls(self, split: str) -> np.ndarray:
        """(N, 2, pitches, frames) read-only uint8 memory map of the clips' piano rolls (CacheError if the cache has none)."""
        if self.roll_config is None:
            raise CacheError(f"{self.path} holds no piano rolls; rebuild it with `pdd-data prepare` beside MIDI files, "
                             "or with --transcribe")  # fmt: skip
        if split not in self._roll_maps:
            shape = (self.num_clips(split), *self.roll_config.shape)
            if shape[0] == 0:
                self._roll_maps[split] = np.zeros(shape, dtype=np.uint8)
            else:
                self._roll_maps[split] = np.memmap(self.roll_shard_path(split), dtype=np.uint8, mode="r", shape=shape)
        return self._roll_maps[split]

    def roll_shard_path(self, split: str) -> Path:
        return resolve_inside(self.path, self._split(split)["roll_file"], f"{self.path / INDEX_NAME}: split {split} roll file",
                              CacheError)  # fmt: skip

    def shard_path(self, split: str) -> Path:
        """The shard file of `split`, resolved inside the cache folder (an index naming anything else is refused)."""
        return resolve_inside(self.path, self._split(split)["file"], f"{self.path / INDEX_NAME}: split {split} file", CacheError)

    def sources(self, split: str) -> list[str]:
        """Source file (relative to the ingested folder) of every clip of `split`, in clip order."""
        names = self.index["sources"]
        return [names[i] for i in self._split(split)["clip_source"]]

    def source_ids(self, split: str) -> np.ndarray:
        """(N,) integer id of the source file of every clip (an index into `index["sources"]`)."""
        return np.asarray(self._split(split)["clip_source"], dtype=np.int64)

    def offsets(self, split: str) -> np.ndarray:
        """(N,) start of every clip in its source, in samples at the preset rate."""
        return np.asarray(self._split(split)["clip_offset"], dtype=np.int64)

    def batches(self, split: str, batch_size: int = 64) -> Iterator[np.ndarray]:
        """float32 (≤ batch_size, n_mels, frames) batches in clip order: the numpy reader for evaluation."""
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        data = self.clips(split)
        for start in range(0, data.shape[0], batch_size):
            yield np.asarray(data[start : start + batch_size], dtype=np.float32)

    def all_finite(self, split: str) -> bool:
        """Whether every value of `split` is finite, scanned in batches (a hostile or corrupt cache may hold NaN)."""
        return all(bool(np.isfinite(batch).all()) for batch in self.batches(split, 256))

    def sample(self, split: str, n: int, seed: int = 0) -> np.ndarray:
        """float32 (min(n, N), n_mels, frames): a seeded random subset without replacement, in clip order."""
        data = self.clips(split)
        count = min(int(n), data.shape[0])
        picks = np.sort(np.random.default_rng(seed).choice(data.shape[0], size=count, replace=False))
        return np.asarray(data[picks], dtype=np.float32)


def open_cache(path: str | os.PathLike[str]) -> MelCache:
    """Open and validate a cache folder; CacheError (one line, says how to rebuild) if it is missing or corrupt."""
    path = Path(path)
    rebuild = f"build it with `pdd-data prepare AUDIO_DIR --out {path}`"
    if not path.is_dir():
        raise CacheError(f"{path}: no such mel cache folder; {rebuild}")
    index_path = path / INDEX_NAME
    if not index_path.is_file():
        raise CacheError(f"{path} is not a mel cache (no {INDEX_NAME}); {rebuild}")
    index = read_index(index_path)
    cache = MelCache(path, index)
    _check_shards(cache)
    return cache


def read_index(index_path: Path) -> dict[str, Any]:
    """Parse and shape-check index.json (no shard access)."""
    try:
        index = load_json(index_path, "cache index", CacheError)
    except CacheError as exc:
        raise CacheError(f"{exc}; rebuild the cache with --force") from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise CacheError(f"{index_path}: format {printable(repr(found), 60)} is not {CACHE_FORMAT!r}; rebuild the cache with --force")
    try:
        check_audio_bounds(index["config"], "audio preset", CacheError)
        AudioConfig.from_dict(index["config"])
        if index["dtype"] not in DTYPES:
            raise ValueError(f"dtype {index['dtype']!r}")
        n_sources = len(index["sources"])
        if not all(isinstance(name, str) for name in index["sources"]):
            raise ValueError("source names must be strings")
        for name, info in index["splits"].items():
            clips = info["clips"]
            if isinstance(clips, bool) or not isinstance(clips, int) or clips < 0:
                raise ValueError(f"split {name}: clip count {clips!r} is not a count")
            if len(info["clip_source"]) != clips or len(info["clip_offset"]) != clips:
                raise ValueError(f"split {name}: clip lists do not match the clip count")
            if not all(type(v) is int for v in (*info["clip_source"], *info["clip_offset"])):
                raise ValueError(f"split {name}: clip sources and offsets must be integers")
            if clips and not 0 <= min(info["clip_offset"]) <= max(info["clip_offset"]) < MAX_CLIP_OFFSET:
                raise ValueError(f"split {name}: clip offset out of range")
            if not isinstance(info["file"], str):
                raise ValueError(f"split {name}: shard file name is not text")
            if clips and not 0 <= min(info["clip_source"]) <= max(info["clip_source"]) < n_sources:
                raise ValueError(f"split {name}: source id out of range")
            if "roll" in index and not isinstance(info["roll_file"], str):
                raise ValueError(f"split {name}: roll file name is not text")
        if "roll" in index:
            RollConfig.from_dict(index["roll"]["config"])
            if index["roll"]["source"] not in ROLL_SOURCES:
                raise ValueError("roll source is neither midi nor transcription")
            if RollConfig.from_dict(index["roll"]["config"]).frames != index["config"]["frames"]:
                raise ValueError("roll frames differ from the audio preset's")
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise CacheError(f"{index_path} is corrupt ({printable(exc, 200)}); rebuild the cache with --force") from None
    return index


def _check_shards(cache: MelCache) -> None:
    for split in cache.splits:
        info = cache.index["splits"][split]
        expected = int(info["clips"]) * cache.config.n_mels * cache.config.frames * cache.dtype.itemsize
        if expected == 0:
            continue
        if cache.roll_config is not None:
            _check_shard_size(cache, info["roll_file"], cache.roll_shard_path(split),
                              int(info["clips"]) * int(np.prod(cache.roll_config.shape)))  # fmt: skip
        _check_shard_size(cache, info["file"], cache.shard_path(split), expected)


def _check_shard_size(cache: MelCache, name: str, shard: Path, expected: int) -> None:
    shown = printable(name, 80)
    if not shard.is_file():
        raise CacheError(f"{cache.path}: shard {shown} is missing; rebuild the cache with --force")
    size = shard.stat().st_size
    if size != expected:
        raise CacheError(f"{cache.path}: shard {shown} has {size} bytes, expected {expected}; rebuild the cache with --force")


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------


class CacheWriter:
    """Streams clips of one build into temp shard files; `commit` swaps them and the index in atomically.

    Usage: `w = CacheWriter(path, config)`; `w.add(split, mels, source, offsets)` any number of times; `w.commit(extra)`.
    On any exception call `abort()` (or use it as a context manager): temp files go, the previous cache stays.
    """

    def __init__(self, path: str | os.PathLike[str], config: AudioConfig, dtype: str = "float16",
                 rolls: RollConfig | None = None, roll_source: str = "midi") -> None:  # fmt: skip
        if dtype not in DTYPES:
            raise ConfigError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.path = Path(path)
        self.config = config
        self.dtype = np.dtype(dtype)
        self.rolls = rolls
        self.roll_source = roll_source
        self._roll_files: dict[str, fileio.AtomicFile] = {}
        self.build = secrets.token_hex(4)
        self.sources: list[str] = []
        self._source_ids: dict[str, int] = {}
        self._splits: dict[str, dict[str, Any]] = {}
        self._files: dict[str, fileio.AtomicFile] = {}
        self.path.mkdir(parents=True, exist_ok=True)
        fileio.remove_stale_temps(self.path)  # shards of a build killed by SIGKILL

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self.abort()

    def _shard_name(self, split: str) -> str:
        return f"{split}-{self.build}.bin"

    def open_split(self, split: str) -> None:
        """Declare a split (so it exists in the index even with zero clips)."""
        if split not in self._splits:
            self._splits[split] = {"file": self._shard_name(split), "clips": 0, "clip_source": [], "clip_offset": []}
            self._files[split] = fileio.AtomicFile(self.path / self._shard_name(split), error=CacheError)
            if self.rolls is not None:
                roll_name = f"{split}-{self.build}.roll.bin"
                self._splits[split]["roll_file"] = roll_name
                self._roll_files[split] = fileio.AtomicFile(self.path / roll_name, error=CacheError)

    def add(self, split: str, mels: np.ndarray, source: str, offsets: np.ndarray | list[int],
            rolls: np.ndarray | None = None) -> None:  # fmt: skip
        """Append (n, n_mels, frames) normalised mels cut from `source` at sample `offsets` (and their (n, 2, pitches,
        frames) piano rolls when the writer keeps rolls)."""
        mels = np.asarray(mels)
        if (rolls is None) != (self.rolls is None):
            raise ValueError("rolls must be given exactly when the writer keeps rolls")
        if rolls is not None and (self.rolls is None or rolls.shape != (mels.shape[0], *self.rolls.shape)):
            raise ValueError(f"rolls must be (n, *{self.rolls.shape if self.rolls else None}), got {rolls.shape}")
        if mels.ndim != 3 or mels.shape[1:] != (self.config.n_mels, self.config.frames):
            raise ValueError(f"mels must be (n, {self.config.n_mels}, {self.config.frames}), got {mels.shape}")
        offsets = [int(o) for o in offsets]
        if len(offsets) != mels.shape[0]:
            raise ValueError("one offset per clip")
        self.open_split(split)
        if source not in self._source_ids:
            self._source_ids[source] = len(self.sources)
            self.sources.append(source)
        info = self._splits[split]
        try:
            self._files[split].write(np.ascontiguousarray(mels, dtype=self.dtype).tobytes())
            if rolls is not None:
                self._roll_files[split].write(np.ascontiguousarray(rolls > 0.5, dtype=np.uint8).tobytes())
        except OSError as exc:
            raise CacheError(f"cannot write the cache {printable(self.path)}: {fileio.describe_os_error(exc)}; "
                             "the previous cache is unchanged") from None
        info["clips"] += mels.shape[0]
        info["clip_source"].extend([self._source_ids[source]] * mels.shape[0])
        info["clip_offset"].extend(offsets)

    def counts(self) -> dict[str, int]:
        return {split: info["clips"] for split, info in self._splits.items()}

    def commit(self, extra: dict[str, Any] | None = None) -> Path:
        """Make the shards durable, swap them in, then the index; remove shards the old index referenced."""
        for split in list(self._files):
            self._files.pop(split).commit()  # fsync + rename; the index still names the old shards until below
        for split in list(self._roll_files):
            self._roll_files.pop(split).commit()
        roll = {"roll": {"config": self.rolls.to_dict(), "source": self.roll_source}} if self.rolls is not None else {}
        index = {
            "format": CACHE_FORMAT,
            "config": self.config.to_dict(),
            "dtype": self.dtype.name,
            "build": self.build,
            "splits": {
                split: {**info, "hours": round(info["clips"] * self.config.clip_seconds / 3600.0, 6)}
                for split, info in self._splits.items()
            },
            "sources": self.sources,
            **roll,
            **(extra or {}),
        }
        write_json_atomic(self.path / INDEX_NAME, index)
        keep = {info[key] for info in self._splits.values() for key in ("file", "roll_file") if key in info}
        remove_stale_shards(self.path, keep=keep)
        return self.path

    def abort(self) -> None:
        for handle in (*self._files.values(), *self._roll_files.values()):
            handle.abort()
        self._files, self._roll_files = {}, {}


def write_json_atomic(path: Path, data: Any) -> None:
    try:
        fileio.write_json_atomic(path, data, indent=1, sort_keys=False)  # split order is meaningful
    except PddError as exc:
        raise CacheError(f"{exc}; the previous cache is unchanged") from None


def remove_stale_shards(path: Path, keep: set[str]) -> None:
    """Delete shard files and leftover temp files of earlier or interrupted builds (only our own naming patterns)."""
    for item in path.iterdir():
        name = item.name
        ours = (name.endswith(".bin") and name.split("-")[0] in SPLITS) or (name.startswith(".") and name.endswith(".bin.tmp"))
        if ours and name not in keep and item.is_file():
            item.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic music (test fixtures, smoke runs)
# ----------------------------------------------------------------------------------------------------------------------


def synthetic_piece(config: AudioConfig, seconds: float, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Seeded piano-like audio at the preset rate: notes and chords with harmonics, fast attack and exponential decay."""
    rng = np.random.default_rng(seed)
    sr = config.sample_rate
    n = int(round(seconds * sr))
    wave = np.zeros(n, dtype=np.float32)
    harmonics = np.arange(1, 6, dtype=np.float32)
    t_note = 0.0
    while t_note < seconds:
        length = float(rng.uniform(0.15, 0.6))
        root = int(rng.integers(45, 80))  # MIDI pitch
        chord = [root] + ([root + 4, root + 7] if rng.random() < 0.4 else [])
        start = int(t_note * sr)
        dur = min(n - start, int((length + 0.4) * sr))  # notes ring past the next onset
        tt = np.arange(dur, dtype=np.float32) / np.float32(sr)
        envelope = np.minimum(tt / 0.005, 1.0) * np.exp(-tt * np.float32(rng.uniform(2.0, 6.0)))
        velocity = np.float32(rng.uniform(0.4, 1.0))
        for pitch in chord:
            f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            usable = harmonics[harmonics * f0 < 0.45 * sr]
            weights = (velocity / usable**1.5).astype(np.float32)
            phases = np.float32(2 * np.pi * f0) * np.outer(usable, tt)
            wave[start : start + dur] += envelope * (weights @ np.sin(phases))
        t_note += length
    peak = float(np.max(np.abs(wave))) or 1.0
    return (wave * np.float32(level / peak)).astype(np.float32)


def cut_clips(wave: np.ndarray, config: AudioConfig, hop_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a mono wave into (n, clip_samples) clips every `hop_samples`; returns (clips, start offsets). The tail is dropped."""
    size = config.clip_samples
    if hop_samples <= 0:
        raise ConfigError(f"clip hop must be positive, got {hop_samples} samples")
    if wave.shape[0] < size:
        return np.zeros((0, size), dtype=np.float32), np.zeros(0, dtype=np.int64)
    starts = np.arange(0, wave.shape[0] - size + 1, hop_samples, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(wave, size)[starts]
    return np.ascontiguousarray(windows, dtype=np.float32), starts


def write_synthetic_cache(
    path: str | os.PathLike[str], config: AudioConfig, n_train: int = 16, n_heldout: int = 8, seed: int = 0
) -> Path:
    """A small valid cache from synthetic music through the real front end; two adjacent clips per source file.

    Fast (well under a second for the "tiny" preset); other tests use it as a fixture.
    """
    path = Path(path)
    hop = config.clip_samples
    with CacheWriter(path, config, dtype="float16") as writer:
        for split, count, base in (("train", n_train, 0), ("heldout", n_heldout, 10_000)):
            writer.open_split(split)
            piece = 0
            while count > 0:
                per_source = min(2, count)
                wave = synthetic_piece(config, (per_source * hop + 1) / config.sample_rate, seed=seed * 100_003 + base + piece)
                clips, starts = cut_clips(wave, config, hop)
                clips, starts = clips[:per_source], starts[:per_source]
                writer.add(split, log_mel(clips, config), f"synthetic/{split}-{piece:03d}.wav", starts)
                count -= per_source
                piece += 1
        writer.commit({"params": {"synthetic": True, "seed": seed}})
    return path


def cache_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a cache folder (shards + index)."""
    return sum(item.stat().st_size for item in Path(path).iterdir() if item.is_file())


__all__ = [
    "CACHE_FORMAT",
    "CacheError",
    "CacheWriter",
    "MelCache",
    "cache_bytes",
    "cut_clips",
    "open_cache",
    "synthetic_piece",
    "write_synthetic_cache",
]
