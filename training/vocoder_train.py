"""`pdd-vocoder train`: fit the learned vocoder on corpus audio against its own log-mels (the runtime's exact front end).

Run folder (the same rules as `pdd-train`): `run.json` (settings), `vocoder.pt` (latest checkpoint, atomic: weights, EMA,
optimiser, step, RNG), `log.jsonl`, `loss.png`, `previews/step-<k>.wav`. A new run refuses a folder that holds files unless
`--force`, which deletes only those files; `--resume` continues from `vocoder.pt` (the data stream is a function of the
seed and step, so a resumed run draws the segments an uninterrupted one would). A NaN/inf loss stops the run and keeps the
last good checkpoint.

Data: an audio folder (every file), or a mel cache made by `pdd-data prepare`, whose *training split* source files are
read from the folder it was made from, so the held-out clips `pdd-eval` scores on stay unseen by the vocoder too.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from pdd.runtime import fileio
from pdd.runtime.audio import load_audio
from pdd.runtime.config import AudioConfig, get_preset
from pdd.runtime.errors import AudioError, ConfigError, PddError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.mel import log_mel
from pdd.runtime.untrusted import bounded_int, is_inside, printable
from pdd.training.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, allocate, load_checkpoint, save_checkpoint,
                                     stored_values)
from pdd.training.progress import Progress
from pdd.training.repro import step_seed
from pdd.training.runfolder import RunKind, append_log, plot_loss, prepare_resumable_run, truncate_log
from pdd.training.optim import lr_factor
from pdd.training.vocoder import (VOCODER_GATE, LossConfig, MelVocoder, VocoderInfo, VocoderLoss, expected_params,
                                  parameter_count, vocoder_preset)

RUN_FILE, CHECKPOINT_FILE, LOG_FILE, LOSS_PNG, PREVIEW_DIR = "run.json", "vocoder.pt", "log.jsonl", "loss.png", "previews"
CHECKPOINT_KIND = "vocoder"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
RESUME_MAY_CHANGE = frozenset({"steps", "checkpoint_every", "preview_every", "log_every", "audio_dir"})
MAX_STEPS = 10_000_000


class VocoderNonFinite(PddError):
    """The loss went NaN/inf: the run stops and keeps the last good checkpoint."""


@dataclass(frozen=True)
class VocoderTrainConfig(JsonConfig):
    """Everything a vocoder run is made of; saved in run.json and each checkpoint."""

    config_kind: ClassVar[str] = "vocoder training config"

    data: str = ""
    audio_dir: str = ""  # the audio folder a mel cache --data was made from, when it lies outside the cache (--audio-dir)
    audio_preset: str = "paper"
    preset: str = "small"
    steps: int = 20000
    batch_size: int = 16
    segment_frames: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.05
    warmup: int = 500
    weight_decay: float = 1e-2
    ema: float = 0.999
    input_noise: float = 0.0  # std of Gaussian noise added to the input mel (robustness to a model's imperfect x̂0)
    seed: int = 0
    checkpoint_every: int = 500
    preview_every: int = 2000
    log_every: int = 50

    def __post_init__(self) -> None:
        ints = {"steps": (1, MAX_STEPS), "batch_size": (1, 4096), "segment_frames": (4, 4096), "warmup": (0, MAX_STEPS),
                "checkpoint_every": (1, MAX_STEPS), "preview_every": (1, MAX_STEPS), "log_every": (1, MAX_STEPS),
                "seed": (0, 2**63 - 1)}
        for key, (low, high) in ints.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"--{key.replace('_', '-')} must be an integer in [{low}, {high}], got {value!r}")
        floats = {"lr": (1e-8, 1.0), "min_lr_ratio": (0.0, 1.0), "weight_decay": (0.0, 1.0), "ema": (0.0, 0.99999),
                  "input_noise": (0.0, 1.0)}
        for key, (low, high) in floats.items():
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
                raise ConfigError(f"--{key.replace('_', '-')} must be in [{low}, {high}], got {value!r}")
        vocoder_preset(self.preset)
        get_preset(self.audio_preset)


# -- data ------------------------------------------------------------------------------------------------------------------

@dataclass
class Track:
    name: str
    wave: np.ndarray  # (samples,) float32
    mel: np.ndarray  # (n_mels, frames) normalised log-mel of the whole file


class SegmentStream:
    """Random (mel segment, matching wave) pairs from whole tracks; which ones is a function of (seed, step) only."""

    def __init__(self, tracks: list[Track], audio: AudioConfig, segment_frames: int, seed: int) -> None:
        usable = [t for t in tracks if t.mel.shape[1] > segment_frames]
        if not usable:
            raise ConfigError(f"no audio file is longer than {segment_frames} frames "
                              f"({segment_frames * audio.hop_length / audio.sample_rate:.2f} s); nothing to train on")
        self.tracks, self.audio, self.frames, self.seed = usable, audio, segment_frames, seed
        weights = np.array([t.mel.shape[1] - segment_frames for t in usable], dtype=np.float64)
        self.weights = weights / weights.sum()

    @property
    def hours(self) -> float:
        return sum(t.wave.shape[0] for t in self.tracks) / self.audio.sample_rate / 3600

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(size, n_mels, S) mels and (size, (S−1)·hop) waves: segment frame k is centred on wave sample k·hop."""
        rng = np.random.default_rng(step_seed(self.seed, step, 0))
        hop, frames = self.audio.hop_length, self.frames
        samples = (frames - 1) * hop
        mels, waves = [], []
        for track_index in rng.choice(len(self.tracks), size=size, p=self.weights):
            track = self.tracks[int(track_index)]
            start = int(rng.integers(0, track.mel.shape[1] - frames))
            mels.append(track.mel[:, start:start + frames])
            wave = track.wave[start * hop:start * hop + samples]
            waves.append(np.pad(wave, (0, samples - wave.shape[0])))
        return np.stack(mels), np.stack(waves).astype(np.float32)


def training_files(data: Path, audio_dir: str = "") -> tuple[Path, list[str]]:
    """(root, relative names) of the audio to train on: a cache's training-split sources, or every audio file of a folder.

    Only folders the user named are read: a cache's index.json records its audio folder, but the index is untrusted (a
    shared cache could name /etc or another user's music), so that folder is used only when it lies inside the cache;
    otherwise the user names it with --audio-dir."""
    if (data / "index.json").is_file():
        from pdd.training.cache import open_cache

        cache = open_cache(data)
        root = cache_audio_root(data, cache.index.get("input"), audio_dir)
        if "train" not in cache.splits:
            raise ConfigError(f"{data} has no training split")
        return root, sorted(set(cache.sources("train")))
    if audio_dir:
        raise ConfigError(f"--audio-dir names the audio folder of a mel cache, but --data {data} is not a cache")
    if not data.is_dir():
        raise ConfigError(f"--data {data}: no such folder (an audio folder or a cache made by `pdd-data prepare`)")
    names = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not names:
        raise ConfigError(f"--data {data} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return data, names


def cache_audio_root(cache: Path, recorded: Any, audio_dir: str) -> Path:
    """The folder a cache's sources are read from: --audio-dir when given, else the index's own folder if it lies
    inside the cache; anything else is refused with the option that would name it."""
    if audio_dir:
        if not Path(audio_dir).is_dir():
            raise ConfigError(f"--audio-dir {audio_dir}: no such folder")
        return Path(audio_dir)
    if not isinstance(recorded, str) or not recorded or "\x00" in recorded:
        raise ConfigError(f"{cache} is a mel cache whose index names no audio folder; pass --audio-dir with the folder "
                          "it was made from")
    root = Path(recorded) if os.path.isabs(recorded) else cache / recorded
    if not is_inside(cache, root):
        raise ConfigError(f"{cache} is a mel cache made from {printable(recorded)}, outside the cache; pdd-vocoder reads "
                          f"only folders named on its command line: pass --audio-dir {printable(recorded)} if that is "
                          "the audio you mean")
    if not root.is_dir():
        raise ConfigError(f"{cache} is a mel cache, but the audio folder it was made from ({printable(recorded)}) is "
                          "gone; pass --audio-dir with the audio folder instead")
    return root


def load_tracks(data: Path, audio: AudioConfig, log: Callable[[str], None] = print, audio_dir: str = "") -> list[Track]:
    """Read, resample to the preset's rate and analyse every training file; unreadable ones are skipped and listed."""
    root, names = training_files(data, audio_dir)
    tracks, skipped = [], []
    for name in names:
        path = root / name
        if not path.resolve().is_relative_to(root.resolve()):
            skipped.append(f"{printable(name, 120)} (outside {printable(root)})")
            continue
        try:
            wave = load_audio(path, audio.sample_rate)
        except AudioError as exc:
            skipped.append(f"{printable(name, 120)} ({exc})")
            continue
        if not np.all(np.isfinite(wave)):
            skipped.append(f"{printable(name, 120)} (NaN/inf samples)")
            continue
        tracks.append(Track(name, wave, log_mel(wave, audio)))
    if skipped:
        log(f"pdd-vocoder: skipped {len(skipped)} file(s): " + "; ".join(skipped[:5]) + (" …" if len(skipped) > 5 else ""))
    if not tracks:
        raise ConfigError(f"--data {data}: no readable audio")
    return tracks


# -- the run folder --------------------------------------------------------------------------------------------------------

def run_files(out: Path) -> list[Path]:
    """Every file a vocoder run writes in its folder (what --force may delete)."""
    files = [out / name for name in (RUN_FILE, CHECKPOINT_FILE, LOG_FILE, LOSS_PNG)]
    previews = out / PREVIEW_DIR
    if previews.is_dir():
        files += sorted(previews.glob("step-*.wav"))
    return files


def prepare_vocoder_run(out: Path, given: dict[str, Any], *, resume: bool, force: bool) -> VocoderTrainConfig:
    kind = RunKind(VocoderTrainConfig, "vocoder_train", CHECKPOINT_FILE, RUN_FILE, RESUME_MAY_CHANGE, run_files,
                   "AUDIO_DIR_OR_CACHE")
    return prepare_resumable_run(kind, out, given, resume=resume, force=force)


def vocoder_state(model: MelVocoder, ema: MelVocoder, optimizer: torch.optim.Optimizer, step: int,
                  config: VocoderTrainConfig, info: VocoderInfo) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "kind": CHECKPOINT_KIND, "info": info.to_dict(), "step": int(step),
            "model": {k: v.detach().cpu() for k, v in ema.state_dict().items()},  # exported weights: the EMA
            "raw": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "train": config.to_dict(),
            "rng": {"torch": torch.get_rng_state()}}


def load_vocoder(path: str | os.PathLike[str], audio: AudioConfig | None = None) -> tuple[MelVocoder, VocoderInfo]:
    """The EMA vocoder of a `pdd-vocoder train` checkpoint, in eval mode; CheckpointError for anything else."""
    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a vocoder checkpoint (a denoiser? pass the vocoder.pt of a `pdd-vocoder train` run)")
    try:
        info = VocoderInfo.from_dict(state["info"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if audio is not None and info.audio != audio:
        raise CheckpointError(f"{path}: vocoder made for audio preset {info.audio.name!r} ({info.audio.sample_rate} Hz, "
                              f"{info.audio.n_mels} mels), the model needs {audio.name!r}")
    params = expected_params(info.audio, info.config)
    check_weight_storage(path, state["model"], params)
    model = allocate(lambda: MelVocoder(info.audio, info.config, info.gate), path, params)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded vocoder config ({str(exc).splitlines()[0]})") from None
    return model.eval(), info


def check_weight_storage(path: str | os.PathLike[str], weights: Any, needed: int) -> None:
    """Refuse weights that cannot hold `needed` parameters, counting the bytes really stored (a tensor expanded from one
    element claims any size but stores four bytes), so a small file never makes us allocate a large model."""
    if not isinstance(weights, dict) or not all(isinstance(w, torch.Tensor) for w in weights.values()):
        raise CheckpointError(f"{path}: the vocoder weights are not a dict of tensors")
    held = stored_values(weights)
    if needed > held:
        raise CheckpointError(f"{path}: the recorded vocoder config needs {needed:,} parameters, the file stores "
                              f"{held:,} values; not a pdd vocoder checkpoint")


def restore_run(path: Path, info: VocoderInfo, model: MelVocoder, ema: MelVocoder,
                optimizer: torch.optim.Optimizer) -> int:
    """Load a run's vocoder.pt into the live model, EMA, optimiser and RNG after checking it is this run's and whole;
    the step it reached. Any damage is one CheckpointError that says how to go on."""
    state = load_checkpoint(path)
    damaged = f"{path} is damaged or not this run's checkpoint"
    try:
        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path}: not a vocoder checkpoint")
        saved = VocoderInfo.from_dict(state["info"])
        if (saved.audio, saved.config) != (info.audio, info.config):
            raise CheckpointError(f"{path} holds a vocoder of another preset than run.json describes")
        step = bounded_int(state["step"], f"{path}: step", 0, MAX_STEPS, CheckpointError)
        for key in ("raw", "model"):
            check_weight_storage(path, state[key], parameter_count(model))
        model.load_state_dict(state["raw"])
        ema.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        check_optimizer_state(optimizer)
        torch.set_rng_state(state["rng"]["torch"])
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; start over with --force") from None
    except (ConfigError, KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        reason = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 160)
        raise CheckpointError(f"{damaged} ({reason}); start over with --force") from None
    return step


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """AdamW's moments must match their parameters in shape and be float tensors: load_state_dict does not check, and a
    damaged one would fail at the first step, minutes later, with a torch traceback."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if name == "step":
                    continue
                if not isinstance(value, torch.Tensor) or value.shape != param.shape or not value.is_floating_point():
                    raise ValueError(f"optimizer state {name} does not fit its parameter")


# -- the loop --------------------------------------------------------------------------------------------------------------

def train_vocoder(out: str | os.PathLike[str], given: dict[str, Any], *, resume: bool = False, force: bool = False,
                  threads: int | None = None, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) a vocoder run in `out`; returns the checkpoint path."""
    out = Path(out)
    config = prepare_vocoder_run(out, given, resume=resume, force=force)
    if threads is not None:
        torch.set_num_threads(threads)
    audio = get_preset(config.audio_preset)
    info = VocoderInfo(audio, vocoder_preset(config.preset), VOCODER_GATE)
    torch.manual_seed(config.seed)
    model = MelVocoder(audio, info.config, info.gate)
    ema = MelVocoder(audio, info.config, info.gate)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.8, 0.99))
    start = 0
    if resume:
        start = restore_run(out / CHECKPOINT_FILE, info, model, ema, optimizer)
        truncate_log(out / LOG_FILE, start)
    if start >= config.steps:
        log(f"pdd-vocoder: {out} already trained {start} steps (--steps {config.steps}); nothing to do")
        return out / CHECKPOINT_FILE

    tracks = load_tracks(Path(config.data), audio, log, config.audio_dir)
    stream = SegmentStream(tracks, audio, config.segment_frames, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    info.training = {"data": config.data, "hours": round(stream.hours, 3), "files": len(stream.tracks),
                     "params": parameter_count(model)}
    fileio.write_json_atomic(out / RUN_FILE, {"vocoder_train": config.to_dict(), "info": info.to_dict()}, indent=2)
    log(f"pdd-vocoder: {parameter_count(model) / 1e6:.2f} M params, {stream.hours:.2f} h of audio in {len(stream.tracks)} "
        f"files, steps {start} → {config.steps}")
    criterion = VocoderLoss(audio, LossConfig())
    bar = Progress(progress, config.steps, start)
    last_good = start if resume else None
    step = start
    try:
        window_started, window_steps = time.perf_counter(), 0
        while step < config.steps:
            mels, waves = stream.batch(step, config.batch_size)
            mel_t, wave_t = torch.from_numpy(mels), torch.from_numpy(waves)
            noisy = mel_t
            if config.input_noise > 0:
                noise_gen = torch.Generator().manual_seed(step_seed(config.seed, step, 1))
                noisy = mel_t + config.input_noise * torch.randn(mel_t.shape, generator=noise_gen)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(step, config.warmup, config.steps, config.min_lr_ratio)
            loss, parts = criterion(model.waveform(noisy, wave_t.shape[-1]), wave_t, mel_t)
            if not math.isfinite(float(loss.detach())):
                where = f"the last good checkpoint (step {last_good}) is kept" if last_good is not None else "no checkpoint yet"
                bad_data = "" if np.all(np.isfinite(mels)) and np.all(np.isfinite(waves)) else " (the batch itself holds NaN/inf)"
                raise VocoderNonFinite(f"loss is {float(loss)} at step {step}{bad_data}; {where}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            # EMA with the usual warm-up (decay (1+k)/(10+k) until it reaches --ema), so short runs export trained weights.
            decay = min(config.ema, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for target, source in zip(ema.parameters(), model.parameters()):
                    target.lerp_(source, 1.0 - decay)
            step += 1
            window_steps += 1
            rate = window_steps / max(time.perf_counter() - window_started, 1e-9)
            bar.update(step, float(loss.detach()), rate)
            if step % config.log_every == 0 or step == config.steps:
                append_log(out / LOG_FILE, {"step": step, "loss": round(float(loss.detach()), 6), **{k: round(v, 6) for k, v in parts.items()},
                                             "lr": optimizer.param_groups[0]["lr"], "it_s": round(rate, 3)})
                window_started, window_steps = time.perf_counter(), 0
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(out / CHECKPOINT_FILE, vocoder_state(model, ema, optimizer, step, config, info))
                last_good = step
                plot_loss(out / LOG_FILE, out / LOSS_PNG)
            if step % config.preview_every == 0 or step == config.steps:
                write_preview(ema, stream, out / PREVIEW_DIR / f"step-{step}.wav")
    finally:
        bar.close()
    log(f"pdd-vocoder: done at step {step}; checkpoint {out / CHECKPOINT_FILE}")
    return out / CHECKPOINT_FILE


def write_preview(model: MelVocoder, stream: SegmentStream, path: Path) -> None:
    """The first 8.9 s of the longest training file decoded by the EMA vocoder (a fixed clip, so previews compare)."""
    from pdd.runtime.audio import write_audio

    track = max(stream.tracks, key=lambda t: t.mel.shape[1])
    mel = torch.from_numpy(np.ascontiguousarray(track.mel[None, :, : stream.audio.frames]))
    with torch.no_grad():
        wave = model.eval().waveform(mel)[0].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(wave).max(initial=0.0))
    write_audio(path, wave / peak * 0.89 if peak > 1.0 else wave, stream.audio.sample_rate, subtype="pcm16", overwrite=True)


