"""The held-out reference sets pdd-eval scores against (split by source file, never training clips) and `Scorer`, which
turns a set of waves into FD-mel, FD-BP, KAD, flux, the busy/flat statistics and the structure metrics against them
(docs/architecture.md, "Quality and the three floors")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.audio import load_audio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime.mel import log_mel
from pdd.runtime.untrusted import resolve_inside
from pdd.training.metrics import (
    GaussianStats,
    frechet_distance,
    band_std,
    kad,
    median_bandwidth,
    mel_frame_features,
    silent_fraction,
    spectral_flux,
)
from pdd.training.structure import clip_structure, set_structure, split_notes, structure_ratios

# KAD's kernel matrices are (blocks × blocks): a seeded subsample of at most this many ~1-s blocks per side keeps a long
# reference folder to a few tens of MB (K = 48 clips are ~430 blocks, so model tables use every block).
KAD_MAX_BLOCKS = 2048


# -- scoring audio against a reference set --------------------------------------------------------------------------------

class Scorer:
    """Holds the reference set's statistics; `score(waves)` gives FD-mel, FD-BP, KAD, flux and the structure metrics of a
    set of waves against it (the Basic Pitch ones only with an embedder)."""

    def __init__(self, config: AudioConfig, reference_mels: list[np.ndarray], reference_waves: list[np.ndarray],
                 embedder: Any | None) -> None:
        self.config = config
        self.embedder = embedder
        self.mel_stats = GaussianStats.from_features(_frame_features(reference_mels, config))
        self.bp_stats = None
        self.structure: dict[str, float | None] | None = None
        if embedder is not None:
            feats, structure = self.analyse(reference_waves)
            self.bp_stats = GaussianStats.from_features(feats)
            self.kad_features = _subsample(feats)
            self.kad_bandwidth = median_bandwidth(self.kad_features)  # one kernel for every row scored against this set
            self.structure = structure

    def analyse(self, waves: list[np.ndarray]) -> tuple[np.ndarray, dict[str, float | None]]:
        """Basic Pitch embeddings (total blocks, dim) and the structure metrics of a set of waves, one forward pass each.
        Waves longer than a clip (whole recordings in folder mode) are measured clip by clip."""
        if not waves:
            raise ConfigError("no clips to analyse")
        rate = self.config.sample_rate
        window = self.config.clip_samples / rate
        blocks, clips = [], []
        for wave in waves:
            emb, notes = self.embedder.analyse(np.asarray(wave), rate)
            blocks.append(emb)
            clips += [clip_structure(part, length) for part, length in split_notes(notes, len(wave) / rate, window)]
        return np.concatenate(blocks, axis=0), set_structure(clips)

    def score_mels(self, mels: list[np.ndarray], waves: list[np.ndarray] | None) -> dict[str, Any]:
        flux = spectral_flux(mels, self.config)
        result: dict[str, Any] = {
            "fd_mel": frechet_distance(GaussianStats.from_features(_frame_features(mels, self.config)), self.mel_stats),
            "flux_mean": flux.mean, "flux_std": flux.std, "fd_bp": None, "kad": None,
            "silent_fraction": silent_fraction(mels, self.config), "band_std": band_std(mels, self.config),
            "structure": None, "structure_x_real": None,
        }
        if self.embedder is not None and waves is not None:
            feats, structure = self.analyse(waves)
            result["fd_bp"] = frechet_distance(GaussianStats.from_features(feats), self.bp_stats)
            result["kad"] = kad(_subsample(feats), self.kad_features, self.kad_bandwidth)
            result["structure"] = structure
            result["structure_x_real"] = structure_ratios(structure, self.structure)
        return result

    def score(self, waves: list[np.ndarray]) -> dict[str, Any]:
        """Re-analyse waves with the project's front end, then score them."""
        return self.score_mels([log_mel(np.asarray(w, dtype=np.float32), self.config) for w in waves], waves)


def _subsample(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """At most KAD_MAX_BLOCKS rows of a feature set, a seeded choice in original order (all of them when fewer)."""
    if features.shape[0] <= KAD_MAX_BLOCKS:
        return features
    keep = np.sort(np.random.default_rng(seed).choice(features.shape[0], KAD_MAX_BLOCKS, replace=False))
    return features[keep]


def _frame_features(mels: list[np.ndarray], config: AudioConfig) -> np.ndarray:
    return np.concatenate([mel_frame_features(m[None] if m.ndim == 2 else m, config) for m in mels], axis=0)


def load_embedder(enabled: bool) -> tuple[Any | None, str | None]:
    """The FD-BP embedder, or (None, why) when disabled or basic-pitch is missing (FD-mel still works)."""
    if not enabled:
        return None, "FD-BP disabled (--no-fd-bp)"
    from pdd.training.basic_pitch import BasicPitchEmbedder, BasicPitchUnavailable

    try:
        return BasicPitchEmbedder(), None
    except BasicPitchUnavailable as exc:
        return None, f"FD-BP skipped: {exc}"


# -- held-out reference sets ----------------------------------------------------------------------------------------------

def split_by_source(source_ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two disjoint halves of clip indices, whole source files to one side, as even in clips as possible.

    Returns (half_a, half_b, by_source); with a single source file the clips are split alternately (by_source False).
    """
    source_ids = np.asarray(source_ids)
    sources = np.unique(source_ids)
    rng = np.random.default_rng(seed)
    if sources.size < 2:
        order = rng.permutation(source_ids.size)
        return np.sort(order[0::2]), np.sort(order[1::2]), False
    halves: list[list[int]] = [[], []]
    for source in rng.permutation(sources):
        members = np.flatnonzero(source_ids == source).tolist()
        halves[0 if len(halves[0]) <= len(halves[1]) else 1].extend(members)
    return np.sort(np.array(halves[0])), np.sort(np.array(halves[1])), True


@dataclass
class HeldOut:
    """The held-out clips an evaluation compares against."""

    mels_a: np.ndarray  # (≤K, F, T) the "real" rows' clips
    mels_b: np.ndarray  # (M, F, T) the reference half
    waves_a: np.ndarray | None  # original audio of the clips, when the cache's source folder is present
    waves_b: np.ndarray | None
    by_source: bool
    audio_note: str


def original_clips(cache: Any, split: str, indices: np.ndarray) -> np.ndarray | None:
    """The original audio of cached clips (from the folder `pdd-data prepare` read), or None when it is gone or differs."""
    root = cache.index.get("input")
    if not root or not Path(root).is_dir():
        return None
    config: AudioConfig = cache.config
    sources, offsets = cache.sources(split), cache.offsets(split)
    loaded: dict[str, np.ndarray] = {}
    waves = []
    for i in indices:
        name = sources[int(i)]
        try:
            if name not in loaded:
                # The index is untrusted: a source name never reaches outside the folder the cache was made from.
                loaded[name] = load_audio(resolve_inside(root, name, "cache source", AudioError), config.sample_rate)
        except AudioError:
            return None
        start = int(offsets[int(i)])
        clip = loaded[name][start:start + config.clip_samples]
        if clip.shape[0] != config.clip_samples:
            return None
        waves.append(clip)
    waves_arr = np.stack(waves)
    # The files must still be what the cache was made from: their mels must match the cached ones (float16 rounding aside).
    cached = np.asarray(cache.clips(split)[indices], dtype=np.float32)
    if np.abs(log_mel(waves_arr, config) - cached).mean() > 0.01:
        return None
    return waves_arr


def held_out_sets(cache: Any, clips: int, reference_clips: int, seed: int) -> HeldOut:
    ids = cache.source_ids("heldout") if "heldout" in cache.splits else np.zeros(0, dtype=np.int64)
    if ids.size < 4:
        raise ConfigError(f"{cache.path} has {ids.size} held-out clips; evaluation needs at least 4 (re-run pdd-data "
                          f"prepare with a larger --heldout-fraction)")
    half_a, half_b, by_source = split_by_source(ids, seed)
    rng = np.random.default_rng(seed + 1)
    if half_a.size > clips:
        half_a = np.sort(rng.choice(half_a, clips, replace=False))
    if half_b.size > reference_clips:
        half_b = np.sort(rng.choice(half_b, reference_clips, replace=False))
    data = cache.clips("heldout")
    mels_a, mels_b = np.asarray(data[half_a], np.float32), np.asarray(data[half_b], np.float32)
    waves_a, waves_b = original_clips(cache, "heldout", half_a), original_clips(cache, "heldout", half_b)
    if waves_a is None or waves_b is None:
        waves_a = waves_b = None
        note = ("reference audio: Griffin-Lim of the held-out mels (the cache's source audio was not found), so FD-BP's "
                "real-vs-real and Griffin-Lim rows coincide")
    else:
        note = "reference audio: the original held-out audio"
    if not by_source:
        note += "; the held-out set has one source file, so its halves share it (real vs real is optimistic)"
    return HeldOut(mels_a, mels_b, waves_a, waves_b, by_source, note)


def held_out_scorer(cache: Any, clips: int, reference_clips: int = 64, seed: int = 0) -> tuple[HeldOut, Scorer]:
    """The held-out sets of `cache` and a Scorer (FD-BP + FD-mel) on the reference half's original audio: what the back-end
    benchmarks score against. ConfigError when the source audio or basic-pitch is missing."""
    held = held_out_sets(cache, clips, reference_clips, seed)
    if held.waves_a is None or held.waves_b is None:
        raise ConfigError(f"{cache.path}: the audio it was made from is gone; the reference needs the original audio")
    embedder, note = load_embedder(True)
    if embedder is None:
        raise ConfigError(note or "FD-BP unavailable")
    return held, Scorer(cache.config, [held.mels_b], list(held.waves_b), embedder)
