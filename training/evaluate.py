"""The quality-vs-steps table (Salimans & Ho 2022, Fig. 4 is the model) and scoring of any folders of audio; the reference
rows are the floors of docs/architecture.md, "Quality and the three floors".

`evaluate_models` samples K clips per row from one fixed set of seeded noises: the teacher with N-step DDIM and the distilled
student@N for every N of {1024, 256, 64, 32, 16, 8, 4, 2, 1} that exists, plus two reference rows built from held-out clips of
the mel cache (never training clips):

* Griffin-Lim ceiling — held-out real mels inverted with the same Griffin-Lim: the best any mel model can score with this vocoder;
* real vs real — two halves of the held-out set, split by source file: the floor a perfect generator would reach.

Every distance is computed on the audio a row outputs (generated x̂0 → unpack → mel⁻¹ → Griffin-Lim, the runtime's chain),
re-analysed with the project's front end and compared with the reference half of the held-out clips:

* FD-BP — Fréchet distance of Basic Pitch activation embeddings (`pdd.training.basic_pitch`; NOT VGGish FAD, whose weights come
  from a model hub we cannot reach — numbers are comparable within one table only); skipped with a note when basic-pitch is
  not installed;
* FD-mel — Fréchet distance of per-frame log-mel (dB) vectors; spectral flux mean/std (dB);
* teacher fidelity — mel-dB MAE of the row's x̂0 against the teacher@1024 x̂0 from the same noise (model space, no vocoder);
* wall time per clip — sampling (batched, divided by the batch) and Griffin-Lim separately.

The reference half uses the original audio when the cache's source folder is still there (checked against the cached mels),
otherwise Griffin-Lim of its mels (said in the table). Output: table.md, table.json, metrics_vs_steps.png, spectrograms.png and
wavs/<row>/clip-NN.wav.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pdd.runtime.audio import load_audio, write_audio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime import fileio
from pdd.runtime.fileio import claim_output_folder
from pdd.runtime.griffinlim import DEFAULT_ITERS
from pdd.runtime.mel import log_mel
from pdd.runtime.plots import pyplot, save_figure
from pdd.runtime.schedule import TEACHER_STEPS
from pdd.training.metrics import (
    GaussianStats,
    frechet_distance,
    band_std,
    mel_frame_features,
    silent_fraction,
    spectral_flux,
    teacher_fidelity,
)

STANDARD_STEPS = (TEACHER_STEPS, 256, 64, 32, 16, 8, 4, 2, 1)
OUTPUT_FILES = ("table.md", "table.json", "metrics_vs_steps.png", "spectrograms.png")
WAV_DIR = "wavs"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FAD_NOTE = ("FD-BP is a Fréchet distance of Basic Pitch embeddings, not VGGish FAD: VGGish weights are downloaded from a model "
            "hub, which pdd does not do; compare FD-BP values within this table only.")


@dataclass(frozen=True)
class EvalSettings:
    """What `pdd-eval` does; saved in table.json."""

    clips: int = 16  # K generated clips per row
    seed: int = 0  # one generator seeded with this draws the K noises, shared by every row
    steps: tuple[int, ...] = STANDARD_STEPS
    reference_steps: int = TEACHER_STEPS  # teacher fidelity is measured against the teacher at this many DDIM steps
    gl_iters: int = DEFAULT_ITERS
    batch_size: int = 16
    reference_clips: int = 64  # cap on the held-out reference half
    fd_bp: bool = True
    wavs: bool = True
    ddpm_steps: int = 0  # > 0: a "teacher DDPM@N" row, ancestral sampling on t = k/N (the paper's baseline: 1000)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(sorted({int(s) for s in self.steps}, reverse=True)))
        problems = []
        if self.clips < 2:
            problems.append("clips per row (-k) must be >= 2 (a Fréchet distance needs a spread)")
        if not self.steps or min(self.steps) < 1:
            problems.append("steps must be positive integers")
        if not 0 <= self.ddpm_steps <= 4096:
            problems.append("DDPM steps must be in 0..4096 (0 = no DDPM row)")
        if self.reference_steps < 1 or self.gl_iters < 0 or self.batch_size < 1 or self.reference_clips < 2:
            problems.append("reference steps, batch size >= 1, Griffin-Lim iterations >= 0, reference clips >= 2")
        if (self.clips > 4096 or self.reference_clips > 65536 or self.batch_size > 4096 or self.gl_iters > 1000
                or self.reference_steps > 1024 or max(self.steps, default=1) > 1024):
            problems.append("upper bounds (counts that allocate up front): -k <= 4096, reference clips <= 65536, "
                            "batch size <= 4096, Griffin-Lim iterations <= 1000, steps <= 1024")
        if problems:
            raise ConfigError("invalid evaluation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["steps"] = list(self.steps)
        return data


@dataclass
class Row:
    """One line of the table."""

    name: str
    kind: str  # "teacher", "student", "reference", "generated"
    steps: int | None
    clips: int
    fd_bp: float | None = None
    fd_mel: float | None = None
    flux_mean: float | None = None
    flux_std: float | None = None
    fidelity_db: float | None = None
    sample_s_per_clip: float | None = None
    vocoder_s_per_clip: float | None = None
    silent_fraction: float | None = None  # the "busy and flat" statistics (metrics.py), on the row's re-analysed audio
    band_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- scoring audio against a reference set --------------------------------------------------------------------------------

class Scorer:
    """Holds the reference set's statistics; `score(waves)` gives FD-mel, FD-BP and flux of a set of waves against it."""

    def __init__(self, config: AudioConfig, reference_mels: list[np.ndarray], reference_waves: list[np.ndarray],
                 embedder: Any | None) -> None:
        self.config = config
        self.embedder = embedder
        self.mel_stats = GaussianStats.from_features(_frame_features(reference_mels, config))
        self.bp_stats = None
        if embedder is not None:
            self.bp_stats = GaussianStats.from_features(embedder.embed_many(reference_waves, config.sample_rate))

    def score_mels(self, mels: list[np.ndarray], waves: list[np.ndarray] | None) -> dict[str, float | None]:
        flux = spectral_flux(mels, self.config)
        result: dict[str, float | None] = {
            "fd_mel": frechet_distance(GaussianStats.from_features(_frame_features(mels, self.config)), self.mel_stats),
            "flux_mean": flux.mean, "flux_std": flux.std, "fd_bp": None,
            "silent_fraction": silent_fraction(mels, self.config), "band_std": band_std(mels, self.config),
        }
        if self.embedder is not None and waves is not None:
            feats = self.embedder.embed_many(waves, self.config.sample_rate)
            result["fd_bp"] = frechet_distance(GaussianStats.from_features(feats), self.bp_stats)
        return result

    def score(self, waves: list[np.ndarray]) -> dict[str, float | None]:
        """Re-analyse waves with the project's front end, then score them."""
        return self.score_mels([log_mel(np.asarray(w, dtype=np.float32), self.config) for w in waves], waves)


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
                loaded[name] = load_audio(Path(root) / name, config.sample_rate)
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


# -- sampling ---------------------------------------------------------------------------------------------------------------

def timed_sampling(model: Any, z1: Any, steps: int, batch_size: int) -> tuple[np.ndarray, float]:
    """x̂0 of every noise in z1 by `steps`-step DDIM, in batches; returns (x̂0 numpy, seconds per clip)."""
    import torch

    from pdd.training.diffusion import sample_ddim

    sample_ddim(model, z1[:1], 1)  # warm-up (first-call allocations, kernel selection) is not sampling time
    outputs = []
    started = time.perf_counter()
    for first in range(0, z1.shape[0], batch_size):
        x0 = sample_ddim(model, z1[first:first + batch_size], steps)
        if x0.is_cuda:
            torch.cuda.synchronize()
        outputs.append(x0.float().cpu().numpy())
    seconds = time.perf_counter() - started
    return np.concatenate(outputs), seconds / z1.shape[0]


def timed_vocoder(mels: np.ndarray, config: AudioConfig, n_iter: int) -> tuple[np.ndarray, float]:
    from pdd.training.diffusion import mel_to_wave

    started = time.perf_counter()
    waves = mel_to_wave(mels, config, n_iter=n_iter)
    return waves, (time.perf_counter() - started) / mels.shape[0]


# -- the table --------------------------------------------------------------------------------------------------------------

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9@]+", "-", name.lower()).strip("-").replace("@", "-at-")


def _evaluation_files(out: Path) -> list[Path]:
    return [out / name for name in OUTPUT_FILES] + sorted((out / WAV_DIR).glob("*/*.wav"))


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a folder that holds files unless `force`, which removes only what an evaluation writes."""
    claim_output_folder(out, force=force, own_files=_evaluation_files, hint="pass --force to replace the evaluation there")
    wav_dir = out / WAV_DIR
    if wav_dir.is_dir():  # row folders emptied by --force go too
        for sub in wav_dir.iterdir():
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"


def markdown_table(rows: list[Row], notes: list[str], title: str) -> str:
    header = ("| row | N | FD-BP ↓ | FD-mel ↓ | flux mean (dB) | flux std (dB) | fidelity vs teacher (dB MAE) ↓ "
              "| sampling s/clip | Griffin-Lim s/clip |")
    lines = [f"# {title}", "", header, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r.name} | {r.steps if r.steps is not None else '—'} | {_fmt(r.fd_bp)} | {_fmt(r.fd_mel)} | "
                     f"{_fmt(r.flux_mean)} | {_fmt(r.flux_std)} | {_fmt(r.fidelity_db)} | {_fmt(r.sample_s_per_clip, 4)} | "
                     f"{_fmt(r.vocoder_s_per_clip, 4)} |")
    lines.append("")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    fileio.atomic_write_text(path, text)  # the one atomic writer: records the file in the folder's ledger


def write_tables(out: Path, rows: list[Row], notes: list[str], title: str, extra: dict[str, Any]) -> None:
    write_text_atomic(out / "table.md", markdown_table(rows, notes, title))
    payload = {"format": "pdd-eval/1", "title": title, "rows": [r.to_dict() for r in rows], "notes": notes, **extra}
    write_text_atomic(out / "table.json", json.dumps(payload, indent=2) + "\n")


def comparisons(rows: list[Row], reference_steps: int) -> list[dict[str, Any]]:
    """For every N with both rows, the claim the table exists to test: does student@N beat teacher DDIM@N, and how close
    does it come to the teacher at `reference_steps` (the slow sampler it was distilled from)?

    Per metric (FD-BP, FD-mel: lower is better; fidelity: dB MAE to the reference, lower is better) the entry holds both
    values, the reference row's value, `student_better_<m>` and, for the distances, `student_closer_to_reference_<m>`
    (|student − reference| < |teacher@N − reference|): a student that reproduces a flawed teacher faithfully is "worse"
    than a blurrier few-step teacher on an FD that happens to prefer blur, but it is closer to what it was trained to be.
    """
    teacher = {r.steps: r for r in rows if r.kind == "teacher"}
    reference = teacher.get(reference_steps)
    result = []
    for r in rows:
        if r.kind == "student" and r.steps in teacher:
            t = teacher[r.steps]
            entry: dict[str, Any] = {"steps": r.steps}
            for metric in ("fd_bp", "fd_mel", "fidelity_db"):
                a, b = getattr(r, metric), getattr(t, metric)
                ref = getattr(reference, metric) if reference is not None else None
                entry[f"student_{metric}"], entry[f"teacher_{metric}"], entry[f"reference_{metric}"] = a, b, ref
                entry[f"student_better_{metric}"] = None if a is None or b is None else bool(a < b)
                if metric != "fidelity_db":
                    entry[f"student_closer_to_reference_{metric}"] = (
                        None if a is None or b is None or ref is None else bool(abs(a - ref) < abs(b - ref)))
            result.append(entry)
    return result


def comparison_line(entry: dict[str, Any], reference_steps: int) -> str:
    """One line for people: student@N vs teacher DDIM@N (and teacher@reference) on every metric."""
    parts = []
    for metric, label, unit in (("fd_bp", "FD-BP", ""), ("fd_mel", "FD-mel", ""), ("fidelity_db", "fidelity", " dB")):
        a, b = entry[f"student_{metric}"], entry[f"teacher_{metric}"]
        if a is None or b is None:
            continue
        ref = entry.get(f"reference_{metric}")
        ref_text = f" (teacher@{reference_steps} {_fmt(ref)})" if ref is not None and metric != "fidelity_db" else ""
        parts.append(f"{label} {_fmt(a)} vs {_fmt(b)}{unit}{ref_text}")
    return f"student@{entry['steps']} vs teacher DDIM@{entry['steps']}: " + "; ".join(parts)


# -- plots --------------------------------------------------------------------------------------------------------------------

def plot_metrics(path: Path, rows: list[Row]) -> None:
    """Metric vs N (log axis), teacher vs student, with the reference rows as horizontal lines."""
    plt = pyplot()
    metrics = [("fd_bp", "FD-BP"), ("fd_mel", "FD-mel (dB²)"), ("flux_mean", "spectral flux mean (dB)"),
               ("fidelity_db", "fidelity vs teacher@ref (dB MAE)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100)
    for ax, (key, label) in zip(axes.ravel(), metrics):
        for kind, style in (("teacher", "o-"), ("student", "s-")):
            points = [(r.steps, getattr(r, key)) for r in rows if r.kind == kind and getattr(r, key) is not None]
            if points:
                xs, ys = zip(*sorted(points))
                ax.plot(xs, ys, style, label="teacher DDIM" if kind == "teacher" else "student")
        for r, color in zip([r for r in rows if r.kind == "reference"], ("tab:green", "tab:gray")):
            if getattr(r, key) is not None:
                ax.axhline(getattr(r, key), ls="--", color=color, label=r.name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps N")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_spectrogram_grid(path: Path, named_mels: list[tuple[str, np.ndarray]], columns: int = 4) -> None:
    """One row per table row, the first `columns` clips side by side (normalised log-mels, shared colour scale)."""
    plt = pyplot()
    columns = max(1, min(columns, min(m.shape[0] for _, m in named_mels)))
    fig, axes = plt.subplots(len(named_mels), columns, figsize=(2.6 * columns, 1.25 * len(named_mels) + 0.4), dpi=100,
                             squeeze=False)
    for row, (name, mels) in enumerate(named_mels):
        for col in range(columns):
            ax = axes[row, col]
            ax.imshow(mels[col], origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_figure(fig, path)


def write_wavs(out: Path, name: str, waves: np.ndarray | list[np.ndarray], sample_rate: int) -> None:
    folder = out / WAV_DIR / slug(name)
    folder.mkdir(parents=True, exist_ok=True)
    for k, wave in enumerate(waves):
        write_audio(folder / f"clip-{k:02d}.wav", np.asarray(wave), sample_rate, overwrite=True)


# -- teacher + students ------------------------------------------------------------------------------------------------------

def collect_students(folders: str | os.PathLike[str] | list[str | os.PathLike[str]] | None) -> dict[int, Path]:
    """{steps: checkpoint} over one or more pdd-distill folders; a step count found in two folders is ambiguous."""
    from pdd.training.distill import find_students

    if folders is None:
        return {}
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    students: dict[int, Path] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            raise ConfigError(f"{folder}: no such distillation folder")
        found = find_students(folder)
        if not found:
            raise ConfigError(f"{folder} holds no student-N.pt checkpoints (made by pdd-distill)")
        for steps, path in found.items():
            if steps in students:
                raise ConfigError(f"two students with {steps} steps: {students[steps]} and {path}; pass one of the folders")
            students[steps] = path
    return dict(sorted(students.items(), reverse=True))


@dataclass
class EvalResult:
    rows: list[Row]
    notes: list[str]
    out: Path
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def evaluate_models(
    teacher_path: str | os.PathLike[str], students_dir: str | os.PathLike[str] | list[str | os.PathLike[str]] | None,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str], settings: EvalSettings = EvalSettings(), *, device: str = "auto",
    threads: int | None = None, force: bool = False, log: Callable[[str], None] = print,
    vocoder_ckpt: str | os.PathLike[str] | None = None,
) -> EvalResult:
    """The quality-vs-steps table for a teacher and the students in `students_dir` (see the module docstring).

    `students_dir` may be a list of folders, e.g. a run distilled in two stages (1024 → 64, then 64 → 4).
    """
    import torch

    from pdd.training.cache import open_cache
    from pdd.training.checkpoint import CheckpointError, load_denoiser
    from pdd.training.diffusion import sample_noise, x0_to_mel
    from pdd.training.device import resolve_device

    out = Path(out)
    device_name = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    teacher, teacher_info = load_denoiser(teacher_path, device=device_name)
    audio = teacher_info.audio
    students = collect_students(students_dir)
    neural = None
    if vocoder_ckpt is not None:  # rows decoded with the learned vocoder beside Griffin-Lim's
        from pdd.training.vocoder_eval import neural_decoder

        neural = neural_decoder(vocoder_ckpt, audio)
    cache = open_cache(data)
    if not audio.same_front_end(cache.config):  # packing aside: a --pack reshape/none teacher reads the same cache
        raise ConfigError(f"{data} holds audio preset {cache.config.name!r} but the teacher was trained on {audio.name!r}")
    prepare_out(out, force)

    held = held_out_sets(cache, settings.clips, settings.reference_clips, settings.seed)
    log(f"pdd-eval: {settings.clips} clips per row; reference: {held.mels_b.shape[0]} held-out clips "
        f"({held.audio_note})")
    embedder, bp_note = load_embedder(settings.fd_bp)
    ref_waves_b = held.waves_b if held.waves_b is not None else timed_vocoder(held.mels_b, audio, settings.gl_iters)[0]
    scorer = Scorer(audio, [held.mels_b], list(ref_waves_b), embedder)
    rows: list[Row] = []
    grid_mels: list[tuple[str, np.ndarray]] = [("real (held-out)", held.mels_a)]

    # Reference rows: real vs real (the floor), the Griffin-Lim ceiling.
    real_waves_a = held.waves_a
    gl_waves_a, gl_seconds = timed_vocoder(held.mels_a, audio, settings.gl_iters)
    if real_waves_a is not None:
        real_scores = scorer.score_mels([held.mels_a], list(real_waves_a))
    else:
        real_scores = scorer.score_mels([held.mels_a], list(gl_waves_a))
    rows.append(Row("real vs real", "reference", None, held.mels_a.shape[0], **real_scores))
    rows.append(Row("Griffin-Lim ceiling", "reference", None, held.mels_a.shape[0], vocoder_s_per_clip=gl_seconds,
                    **scorer.score(list(gl_waves_a))))
    if settings.wavs:
        if real_waves_a is not None:
            write_wavs(out, "real", real_waves_a, audio.sample_rate)
        write_wavs(out, "griffin-lim ceiling", gl_waves_a, audio.sample_rate)
    if neural is not None:
        neural_waves_a, neural_seconds = neural(held.mels_a)
        rows.append(Row("vocoder ceiling", "reference", None, held.mels_a.shape[0], vocoder_s_per_clip=neural_seconds,
                        **scorer.score(list(neural_waves_a))))
        if settings.wavs:
            write_wavs(out, "vocoder ceiling", neural_waves_a, audio.sample_rate)

    z1 = sample_noise(settings.clips, audio, settings.seed, device_name)
    log(f"pdd-eval: teacher@{settings.reference_steps} (fidelity reference) …")
    reference_x0, reference_seconds = timed_sampling(teacher, z1, settings.reference_steps, settings.batch_size)
    reference_mels = x0_to_mel(reference_x0, audio)

    def add_row(name: str, kind: str, steps: int, x0: np.ndarray, sample_seconds: float) -> None:
        mels = x0_to_mel(x0, audio)
        waves, vocoder_seconds = timed_vocoder(mels, audio, settings.gl_iters)
        scores = scorer.score(list(waves))
        fidelity = teacher_fidelity(mels, reference_mels, audio)
        rows.append(Row(name, kind, steps, settings.clips, fidelity_db=fidelity, sample_s_per_clip=sample_seconds,
                        vocoder_s_per_clip=vocoder_seconds, **scores))
        grid_mels.append((name, mels))
        if settings.wavs:
            write_wavs(out, name, waves, audio.sample_rate)
        if neural is not None:  # the same x̂0 through the learned vocoder: a "-vocoder" kind keeps comparisons on GL rows
            neural_waves, neural_seconds = neural(mels)
            rows.append(Row(f"{name} · vocoder", f"{kind}-vocoder", steps, settings.clips, fidelity_db=fidelity,
                            sample_s_per_clip=sample_seconds, vocoder_s_per_clip=neural_seconds,
                            **scorer.score(list(neural_waves))))
            if settings.wavs:
                write_wavs(out, f"{name} vocoder", neural_waves, audio.sample_rate)
        r = rows[-1]
        log(f"pdd-eval: {name}: FD-mel {_fmt(r.fd_mel)}, FD-BP {_fmt(r.fd_bp)}, fidelity {_fmt(r.fidelity_db)} dB, "
            f"{_fmt(sample_seconds, 4)} s/clip")

    for n in settings.steps:
        if n == settings.reference_steps:
            x0, seconds = reference_x0, reference_seconds
        else:
            x0, seconds = timed_sampling(teacher, z1, n, settings.batch_size)
        add_row(f"teacher DDIM@{n}", "teacher", n, x0, seconds)
        if n in students:
            student, info = load_denoiser(students[n], device=device_name)
            if info.audio != audio:
                raise CheckpointError(f"{students[n]} was made for audio preset {info.audio.name!r}, not {audio.name!r}")
            x0, seconds = timed_sampling(student, z1, n, settings.batch_size)
            add_row(f"student@{n}", "student", n, x0, seconds)
    if settings.ddpm_steps:  # the paper's DDPM baseline; its own kind keeps it out of the DDIM-vs-student comparisons
        from pdd.training.ddpm import timed_ddpm_sampling

        log(f"pdd-eval: teacher DDPM@{settings.ddpm_steps} …")
        x0, seconds = timed_ddpm_sampling(teacher, z1, settings.ddpm_steps, settings.batch_size, settings.seed)
        add_row(f"teacher DDPM@{settings.ddpm_steps}", "teacher-ddpm", settings.ddpm_steps, x0, seconds)
    missing = sorted(set(students) - set(settings.steps), reverse=True)

    notes = [FAD_NOTE if embedder is not None else (bp_note or ""), held.audio_note,
             f"K = {settings.clips} clips per row from seeded noise (seed {settings.seed}), the same noise for every row; "
             f"reference half: {held.mels_b.shape[0]} held-out clips; real rows: {held.mels_a.shape[0]} other held-out clips",
             f"FD-mel and flux are computed on each row's audio re-analysed with the {audio.name!r} front end; fidelity is "
             f"mel-dB MAE of x̂0 against teacher DDIM@{settings.reference_steps} from the same noise",
             f"sampling time: batch {settings.batch_size} on {device_name}, divided by the batch; Griffin-Lim "
             f"{settings.gl_iters} iterations (numpy, CPU)"]
    if missing:
        notes.append(f"students not in the table's step list: {', '.join(str(n) for n in missing)}")
    if embedder is not None:
        notes.append(f"FD-BP embedder: {embedder.info.model_file} (sha256 {embedder.info.model_sha256[:12]}…), "
                     f"{embedder.info.dim}-d, {embedder.info.block_seconds:.2f}-s blocks")
    compared = comparisons(rows, settings.reference_steps)
    notes = [comparison_line(entry, settings.reference_steps) for entry in compared] + notes
    title = f"Quality vs sampling steps — {teacher_info.model.name} teacher, {audio.name} preset"
    write_tables(out, rows, notes, title, {
        "settings": settings.to_dict(), "teacher": str(teacher_path),
        "students": {str(k): str(v) for k, v in students.items()},
        "data": str(data), "comparisons": compared})
    plot_metrics(out / "metrics_vs_steps.png", rows)
    plot_spectrogram_grid(out / "spectrograms.png", grid_mels)
    return EvalResult(rows, notes, out, compared)


# -- any folders of audio -------------------------------------------------------------------------------------------------

def audio_files(folder: str | os.PathLike[str]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def load_folder(folder: str | os.PathLike[str], config: AudioConfig) -> tuple[list[np.ndarray], list[str]]:
    """Every readable audio file of a folder at the preset rate; unreadable or too-short files are skipped and named."""
    waves, skipped = [], []
    min_samples = 2 * config.hop_length + 1
    for path in audio_files(folder):
        try:
            wave = load_audio(path, config.sample_rate)
        except AudioError as exc:
            skipped.append(str(exc))
            continue
        if wave.shape[0] < min_samples:
            skipped.append(f"{path}: too short ({wave.shape[0]} samples)")
            continue
        waves.append(wave)
    if len(waves) < 2:
        raise AudioError(f"{folder}: fewer than 2 readable audio files; nothing to score")
    return waves, skipped


def evaluate_folders(generated: str | os.PathLike[str], reference: str | os.PathLike[str], out: str | os.PathLike[str],
                     config: AudioConfig, *, fd_bp: bool = True, force: bool = False,
                     log: Callable[[str], None] = print) -> EvalResult:
    """Score a folder of generated audio against a folder of reference audio (other systems' outputs welcome)."""
    out = Path(out)
    gen_waves, gen_skipped = load_folder(generated, config)
    ref_waves, ref_skipped = load_folder(reference, config)
    prepare_out(out, force)
    embedder, bp_note = load_embedder(fd_bp)
    scorer = Scorer(config, [log_mel(w, config) for w in ref_waves], ref_waves, embedder)
    rows = [Row("generated", "generated", None, len(gen_waves), **scorer.score(gen_waves))]
    log(f"pdd-eval: {len(gen_waves)} generated vs {len(ref_waves)} reference files: FD-mel {_fmt(rows[0].fd_mel)}, "
        f"FD-BP {_fmt(rows[0].fd_bp)}")
    notes = [FAD_NOTE if embedder is not None else (bp_note or ""),
             f"generated: {generated} ({len(gen_waves)} files); reference: {reference} ({len(ref_waves)} files); "
             f"analysed with the {config.name!r} preset front end at {config.sample_rate} Hz"]
    notes += [f"skipped: {s}" for s in gen_skipped + ref_skipped]
    write_tables(out, rows, notes, "Generated vs reference audio",
                 {"generated": str(generated), "reference": str(reference), "preset": config.to_dict()})
    return EvalResult(rows, notes, out)


__all__ = [
    "EvalResult", "EvalSettings", "HeldOut", "Row", "STANDARD_STEPS", "Scorer", "evaluate_folders", "evaluate_models",
    "held_out_sets", "split_by_source",
]
