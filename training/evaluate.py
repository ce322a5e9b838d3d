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
* KAD — unbiased MMD² (Gaussian kernel, median-heuristic bandwidth of the reference) on the same embeddings: FD is biased
  upwards at a few hundred 72-d samples, KAD is not;
* structure — note density, pitch-class entropy, key clarity, pulse clarity, top-voice stepwise motion, polyphony and pitch
  range of Basic Pitch's transcription of the row's audio, each as × the reference (`pdd.training.structure`);
* FD-mel — Fréchet distance of per-frame log-mel (dB) vectors; spectral flux mean/std (dB);
* teacher fidelity — mel-dB MAE of the row's x̂0 against the teacher@1024 x̂0 from the same noise (model space, no vocoder);
* wall time per clip — sampling (batched, divided by the batch) and Griffin-Lim separately.

The reference half uses the original audio when the cache's source folder is still there (checked against the cached mels),
otherwise Griffin-Lim of its mels (said in the table). Output: table.md, table.json, metrics_vs_steps.png, spectrograms.png and
wavs/<row>/clip-NN.wav.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pdd.runtime.audio import load_audio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime.griffinlim import DEFAULT_ITERS
from pdd.runtime.mel import log_mel
from pdd.runtime.schedule import TEACHER_STEPS
from pdd.runtime.silence import SilenceGate
from pdd.training.eval_report import (
    STRUCTURE_NOTE,
    Row,
    fmt,
    comparison_line,
    comparisons,
    plot_metrics,
    plot_spectrogram_grid,
    prepare_out,
    write_tables,
    write_wavs,
)
from pdd.training.heldout import Scorer, held_out_sets, load_embedder
from pdd.training.metrics import (
    teacher_fidelity,
)

STANDARD_STEPS = (TEACHER_STEPS, 256, 64, 32, 16, 8, 4, 2, 1)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
FAD_NOTE = ("FD-BP is a Fréchet distance of Basic Pitch embeddings, not VGGish FAD: VGGish weights are downloaded from a model "
            "hub, which pdd does not do; compare FD-BP values within this table only.")
KAD_NOTE = ("KAD: unbiased MMD² of the same Basic Pitch embeddings, Gaussian kernel with the median pairwise distance of the "
            "reference as bandwidth (one kernel for every row); its expectation is 0 for real music, so a row can be "
            "slightly negative")


def basic_pitch_notes(embedder: object | None, bp_note: str | None) -> list[str]:
    """The table notes that say what FD-BP, KAD and the structure metrics are (or why they are missing)."""
    return [FAD_NOTE, KAD_NOTE, STRUCTURE_NOTE] if embedder is not None else [bp_note or ""]


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
    vocoder_gate: SilenceGate | None = None,
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

        neural = neural_decoder(vocoder_ckpt, audio, gate=vocoder_gate)
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
        log(f"pdd-eval: {name}: FD-mel {fmt(r.fd_mel)}, FD-BP {fmt(r.fd_bp)}, fidelity {fmt(r.fidelity_db)} dB, "
            f"{fmt(sample_seconds, 4)} s/clip")

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

    notes = [*basic_pitch_notes(embedder, bp_note), held.audio_note,
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

def reference_halves_row(ref_waves: list[np.ndarray], config: AudioConfig, embedder: Any | None) -> Row:
    """Real vs real for a reference folder: files alternately (sorted by path) into two halves, the first scored against
    the second. Alternating keeps a corpus sorted by composer balanced between the halves."""
    half_a, half_b = ref_waves[0::2], ref_waves[1::2]
    scorer = Scorer(config, [log_mel(w, config) for w in half_b], half_b, embedder)
    return Row("real vs real (reference halves)", "reference", None, len(half_a), **scorer.score(half_a))


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
    log(f"pdd-eval: {len(gen_waves)} generated vs {len(ref_waves)} reference files: FD-mel {fmt(rows[0].fd_mel)}, "
        f"FD-BP {fmt(rows[0].fd_bp)}, KAD {fmt(rows[0].kad, 4)}")
    notes = [*basic_pitch_notes(embedder, bp_note),
             f"generated: {generated} ({len(gen_waves)} files); reference: {reference} ({len(ref_waves)} files); "
             f"analysed with the {config.name!r} preset front end at {config.sample_rate} Hz"]
    if len(ref_waves) >= 4:
        rows.append(reference_halves_row(ref_waves, config, embedder))
        notes.append(f"real vs real: reference files alternately in two halves ({rows[-1].clips} vs "
                     f"{len(ref_waves) - rows[-1].clips} files), one scored against the other: the floor of every metric "
                     f"(its distances use half the reference, so they sit a little above a perfect generator's)")
    else:
        notes.append("real vs real: needs at least 4 reference files, so there is no floor row")
    notes += [f"skipped: {s}" for s in gen_skipped + ref_skipped]
    write_tables(out, rows, notes, "Generated vs reference audio",
                 {"generated": str(generated), "reference": str(reference), "preset": config.to_dict()})
    return EvalResult(rows, notes, out)


__all__ = ["EvalResult", "EvalSettings", "STANDARD_STEPS", "evaluate_folders", "evaluate_models"]
