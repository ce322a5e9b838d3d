"""Teacher training: v-diffusion of the 1D U-Net on a mel cache, resumable, single process or torchrun/DDP
(docs/architecture.md: "Diffusion math", "The model", "Reliability", "Beyond one machine").

A run folder holds everything about one run:

    run.json        the training config, audio preset and model config (written when the run starts)
    checkpoint.pt   the latest checkpoint (atomic; model, EMA, optimiser, scheduler, step, RNG states) — the teacher
    checkpoints/    step-NNNNNNN.pt milestones every --keep-every steps (hard links to what checkpoint.pt was then)
    log.jsonl       one JSON line per logged step (loss, lr, grad norm, it/s) plus events (checkpoint, preview, stop)
    loss.png        the loss curve, redrawn at every checkpoint
    previews/       step-NNNNNNN-i.wav / .png: DDIM samples of the EMA model through the runtime's Griffin-Lim

Reproducibility: every random draw of step k (data shift, t, noise, dropout) comes from generators seeded by (seed, k, rank) and
the data order from a DistributedSampler seeded by (seed, epoch), so a resumed run repeats an uninterrupted one's losses exactly
on CPU, whatever happened in between.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.pack import PACK_MODES
from pdd.runtime.schedule import ScheduleConfig
from pdd.training.cache import open_cache
from pdd.training.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    check_compatible,
    checkpoint_info,
    load_checkpoint,
    make_checkpoint_state,
    save_checkpoint,
)
from pdd.runtime.conditioning import ConditionConfig
from pdd.training.cond_data import ConditionDropout, ConditionedDataset
from pdd.training.data import MelDataset
from pdd.training.device import Dist, init_distributed, resolve_device, resolve_precision
from pdd.training.diffusion import TIME_SAMPLINGS, WEIGHTINGS, preview, sample_times, v_loss
from pdd.training.ema import EMA
from pdd.training.models import ARCHS, build_denoiser, presets_of
from pdd.training.models import model_config as build_model_config
from pdd.training.optim import NonFiniteLoss, lr_factor
from pdd.training.progress import Progress
from pdd.training.repro import BatchPlan, restore_rng_states, rng_states, step_seed
from pdd.training.runfolder import (
    RunKind,
    append_log,
    prepare_resumable_run,
    keep_milestone,
    plot_loss,
    truncate_log,
    write_json_atomic,
)
from pdd.training.unet1d import count_parameters

RUN_FORMAT = "pdd-run/1"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
LOSS_PNG = "loss.png"
PREVIEW_DIR = "previews"
MILESTONE_DIR = "checkpoints"
OUR_FILES = (RUN_FILE, CHECKPOINT_FILE, LOG_FILE, LOSS_PNG)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Settings a resumed run may change without changing what it learns; everything else must match the run folder.
RESUME_MAY_CHANGE = frozenset(
    {"data", "steps", "lr", "min_lr_ratio", "log_every", "checkpoint_every", "keep_every", "preview_every", "preview_clips",
     "preview_steps", "precision", "device", "threads"}
)


@dataclass
class TrainConfig(JsonConfig):
    """Hyper-parameters of a teacher run; saved in run.json and in every checkpoint."""

    config_kind: ClassVar[str] = "training config"

    data: str
    preset: str = "small"
    steps: int = 20_000
    batch_size: int = 16  # global: split evenly over torchrun processes
    lr: float = 2e-4
    min_lr_ratio: float = 0.05  # cosine decays to lr × this at the last step
    warmup_steps: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting: str = "snr+1"
    time_sampling: str = "continuous"
    random_shift: bool = True
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_every: int = 0  # keep checkpoints/step-N.pt every this many steps; 0: only the latest
    preview_every: int = 2000  # 0: no previews
    preview_clips: int = 2
    preview_steps: int = 50
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on CUDA, fp32 on CPU
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads on CPU; None keeps torch's choice
    # The ablations and the teacher-efficiency options (docs/ablations.md); the defaults are the shipped teacher's.
    arch: str = "unet1d"  # unet1d | unet2d (training/models.py)
    pack: str = "snake"  # snake | reshape | none (runtime/pack.py; none = C = 1)
    top_width: int = 0  # width of the 1D U-Net's top level; 0 = base × mult[0]
    min_snr_gamma: float = 5.0  # γ of --weighting min-snr
    # A conditioned renderer (training/cond_data.py): notes (piano rolls of the cache), context (known frames), or both.
    condition: str = "none"
    roll_dropout: float = 0.15  # of the notes: the same model is then the unconditional one (classifier-free guidance)
    context_prob: float = 0.5  # items that get part of their own mel as known frames

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {', '.join(ARCHS)}")
        elif self.preset not in presets_of(self.arch):
            problems.append(f"unknown model preset {self.preset!r} for --arch {self.arch}; choose one of: "
                            f"{', '.join(presets_of(self.arch))}")
        if self.pack not in PACK_MODES:
            problems.append(f"pack must be one of {', '.join(PACK_MODES)}")
        if self.arch == "unet2d" and self.pack != "none":
            problems.append("the 2D U-Net sees the unpacked mel image: use --pack none with --arch unet2d")
        if not 0 <= self.top_width <= 4096 or (self.top_width and self.arch != "unet1d"):
            problems.append("top-width must be in 0..4096 (0 = off) and only applies to --arch unet1d")
        if self.condition not in CONDITIONS:
            problems.append(f"condition must be one of {', '.join(CONDITIONS)}")
        elif self.condition != "none" and self.arch != "unet1d":
            problems.append("--condition needs --arch unet1d")
        if not (0.0 <= self.roll_dropout <= 1.0 and 0.0 <= self.context_prob <= 1.0):
            problems.append("roll-dropout and context-prob must be in [0, 1]")
        if not (self.min_snr_gamma > 0 and math.isfinite(self.min_snr_gamma)):
            problems.append("min-snr-gamma must be a positive number")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "preview_clips", "preview_steps"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1")
        for name, limit in MAX_COUNTS.items():  # counts that allocate up front: a typo must not exhaust memory
            if int(getattr(self, name)) > limit:
                problems.append(f"{name.replace('_', '-')} must be <= {limit}")
        if self.warmup_steps < 0 or self.preview_every < 0 or self.keep_every < 0:
            problems.append("warmup-steps, preview-every and keep-every must be >= 0")
        if self.keep_every and self.keep_every % self.checkpoint_every:
            problems.append(
                f"keep-every ({self.keep_every}) must be a multiple of checkpoint-every ({self.checkpoint_every})"
            )
        if self.log_every >= 1 and self.checkpoint_every % self.log_every:
            problems.append(f"checkpoint-every ({self.checkpoint_every}) must be a multiple of log-every ({self.log_every})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append("lr must be a positive number")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append("min-lr-ratio must be in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            problems.append("weight-decay must be >= 0 and grad-clip > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append("ema-decay must be in [0, 1)")
        if self.weighting not in WEIGHTINGS:
            problems.append(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if self.time_sampling not in TIME_SAMPLINGS:
            problems.append(f"time-sampling must be one of {', '.join(TIME_SAMPLINGS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            problems.append("threads must be in 1..1024")
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))


CONDITIONS = ("none", "notes", "context", "notes+context")


def condition_of(name: str) -> ConditionConfig | None:
    """The condition config a --condition name asks for (None: an unconditional teacher)."""
    return None if name == "none" else ConditionConfig(roll="notes" in name, context="context" in name)


MAX_COUNTS = {"batch_size": 4096, "preview_clips": 64, "preview_steps": 1024, "steps": 10**9}


@dataclass
class TrainResult:
    step: int
    last_loss: float | None
    checkpoint: Path
    log: Path
    parameters: int


def _run_files(out: Path) -> list[Path]:
    """Every file a teacher run writes in its folder (what --force may delete)."""
    files = [out / name for name in OUR_FILES]
    files += sorted((out / MILESTONE_DIR).glob("step-*.pt"))
    previews = out / PREVIEW_DIR
    if previews.is_dir():
        files += [item for item in previews.iterdir() if item.is_file() and item.suffix in (".wav", ".png")]
    return files


def prepare_run(out: str | os.PathLike[str], given: dict[str, Any], *, resume: bool = False, force: bool = False) -> TrainConfig:
    """The TrainConfig of the run in `out`: a new one from `given`, or (resume) the saved one with allowed changes applied.

    A new run refuses a non-empty `out` unless `force`, which removes only the files a run writes (never anything else).
    """
    kind = RunKind(TrainConfig, "train", CHECKPOINT_FILE, RUN_FILE, RESUME_MAY_CHANGE, _run_files, "CACHE")
    return prepare_resumable_run(kind, out, given, resume=resume, force=force)


# ---------------------------------------------------------------------------------------------------------------------
# The loop


def _weights_checksum(model: nn.Module) -> list[float]:
    """Two float64 sums over every parameter: equal across ranks iff DDP kept the replicas in step (to rounding)."""
    with torch.no_grad():
        total = sum(p.double().sum() for p in model.parameters())
        absolute = sum(p.double().abs().sum() for p in model.parameters())
    return [float(total), float(absolute)]


def launch(out: str | os.PathLike[str], given: dict[str, Any], *, resume: bool = False, force: bool = False,
           progress: bool = True) -> TrainResult:
    """What `pdd-train` does: join torchrun's process group if there is one, settle the run folder on rank 0, train."""
    device = given.get("device") or "auto"
    world = init_distributed("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        if not world.enabled:
            config = prepare_run(out, given, resume=resume, force=force)
        else:
            # Only rank 0 looks at (and may clean) the folder; the others take its answer, error included.
            payload: list[Any] = [None]
            if world.is_main:
                try:
                    payload = [(prepare_run(out, given, resume=resume, force=force).to_dict(), None)]
                except PddError as exc:
                    payload = [(None, str(exc))]
            dist.broadcast_object_list(payload, src=0)
            settings, error = payload[0]
            if error is not None:
                raise PddError(error)
            config = TrainConfig.from_dict(settings)
        return train(config, out, resume=resume, progress=progress)
    finally:
        if world.enabled and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig, out: str | os.PathLike[str], *, resume: bool = False, progress: bool = True,
          console_print: bool = True) -> TrainResult:
    """Train (or continue) the teacher of run folder `out` per `config` (see `prepare_run`). Works under torchrun too."""
    out = Path(out)
    device_name = resolve_device(config.device)
    device_kind = device_name.split(":")[0]
    joined_here = not dist.is_initialized()
    world = init_distributed(device_kind)
    try:
        return _train(config, out, world, device_name, device_kind, resume, progress, console_print)
    finally:
        if joined_here and world.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, out: Path, world: Dist, device_name: str, device_kind: str, resume: bool,
           progress: bool, console_print: bool) -> TrainResult:
    if device_kind == "cuda" and world.enabled:
        device_name = f"cuda:{world.local_rank}"
        torch.cuda.set_device(device_name)
    device = torch.device(device_name)
    if device_kind == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    amp_dtype = resolve_precision(config.precision, device_kind)
    if config.batch_size % world.world:
        raise ConfigError(f"batch size {config.batch_size} does not split over {world.world} processes")
    per_rank_batch = config.batch_size // world.world

    cache = open_cache(config.data)
    audio: AudioConfig = cache.config.with_pack_mode(config.pack)  # "snake" leaves the cache's preset as it is
    condition = condition_of(config.condition)
    model_config = build_model_config(config.arch, config.preset, audio, top_channels=config.top_width,
                                      cond_channels=condition.channels(audio) if condition else 0)  # fmt: skip
    dataset: MelDataset = MelDataset(cache, split="train", random_shift=config.random_shift, audio=audio)
    if condition is not None:
        dataset = ConditionedDataset(cache, condition, split="train", random_shift=config.random_shift, audio=audio,
                                     dropout=ConditionDropout(config.roll_dropout, config.context_prob))  # fmt: skip
    if len(dataset) == 0:
        raise ConfigError(f"{config.data} has no training clips")

    torch.manual_seed(config.seed)  # the initial weights: the same on every rank
    model = build_denoiser(model_config).to(device)
    ema = EMA(model, decay=config.ema_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.dim() <= 1 else decay).append(param)  # no weight decay on norms and biases
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.999),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps, config.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    checkpoint_path = out / CHECKPOINT_FILE
    log_path = out / LOG_FILE
    start_step = 0
    if resume:
        state = load_checkpoint(checkpoint_path)
        info = checkpoint_info(state)
        if info.kind != "teacher":
            raise CheckpointError(f"{checkpoint_path} is a {info.kind} checkpoint; pdd-train resumes teachers only")
        check_compatible(info, audio, model_config, what=str(checkpoint_path))
        model.load_state_dict(state["model"])
        if state.get("ema") is not None:
            ema.load(state["ema"], state.get("ema_meta"))
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        # A resumed run may change --lr/--steps: re-derive every group's lr from this run's schedule at the saved step
        # (with unchanged settings this reproduces the stored values exactly).
        scheduler.base_lrs = [config.lr for _ in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["initial_lr"] = config.lr
            group["lr"] = config.lr * lr_factor(scheduler.last_epoch, config.warmup_steps, config.steps,
                                                config.min_lr_ratio)
        if scaler is not None and state.get("extra", {}).get("grad_scaler"):
            scaler.load_state_dict(state["extra"]["grad_scaler"])
        restore_rng_states(state.get("rng"), device_kind)
        start_step = info.train_step
        if start_step >= config.steps:
            raise ConfigError(f"{out} is already at step {start_step} of {config.steps}; pass a larger --steps to go on")

    lineage_entry = {"kind": "teacher", "model": config.preset, "arch": config.arch, "pack": audio.pack_mode,
                     "data": str(config.data), "train_clips": len(dataset),
                     "train_hours": round(cache.hours("train"), 4), "parameters": count_parameters(model)}

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RUN_FILE, {"format": RUN_FORMAT, "train": config.to_dict(), "audio": audio.to_dict(),
                                           "model": model_config.to_dict(), "parameters": count_parameters(model)})
        if resume:
            truncate_log(log_path, start_step)
    train_model: nn.Module = model
    if world.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device_kind == "cuda" else None)

    plan = BatchPlan(len(dataset), per_rank_batch, world, config.seed)
    last_good = start_step if resume else None

    def log_line(entry: dict[str, Any]) -> None:
        if world.is_main:
            append_log(log_path, entry)

    def write_checkpoint(step: int) -> None:
        nonlocal last_good
        if world.is_main:
            info = CheckpointInfo(kind="teacher", audio=audio, model=model_config, steps=None,
                                  lineage=[dict(lineage_entry, train_step=step)], train_step=step)
            extra = {"train_config": config.to_dict(), "schedule": ScheduleConfig.teacher().to_dict(),
                     "condition": condition.to_dict() if condition else None,
                     "roll": cache.roll_config.to_dict() if condition and condition.roll and cache.roll_config else None,
                     "world_size": world.world,
                     "grad_scaler": scaler.state_dict() if scaler is not None else None}
            state = make_checkpoint_state(model, info, ema=ema, optimizer=optimizer, scheduler=scheduler,
                                          rng=rng_states(device_kind), extra=extra)
            save_checkpoint(checkpoint_path, state)
            log_line({"event": "checkpoint", "step": step, "path": str(checkpoint_path)})
            if config.keep_every and step % config.keep_every == 0:
                keep_milestone(checkpoint_path, out / MILESTONE_DIR / f"step-{step:07d}.pt")
            plot_loss(log_path, out / LOSS_PNG)
        last_good = step

    def write_preview(step: int) -> None:
        if world.is_main:
            rng = torch.get_rng_state()
            summary = preview(ema.model, audio, out / PREVIEW_DIR, f"step-{step:07d}", clips=config.preview_clips,
                              steps=config.preview_steps, seed=config.seed, device=device, overwrite=True)
            torch.set_rng_state(rng)
            log_line({"event": "preview", "step": step, **summary})

    if world.is_main and console_print:
        where = f"{world.world} processes" if world.enabled else device_name
        print(f"pdd-train: model {config.arch} {config.preset} ({count_parameters(model) / 1e6:.2f} M params) on {len(dataset)} clips "
              f"({audio.name} preset, packed {audio.packed_shape[0]}×{audio.packed_shape[1]}), batch {config.batch_size}, "
              f"{where}, {'fp32' if amp_dtype is None else str(amp_dtype).replace('torch.', '')}; "
              f"steps {start_step}→{config.steps}; run folder {out}")

    bar = Progress(progress and world.is_main, config.steps, start_step)
    interval_losses: list[float] = []
    interval_start = time.perf_counter()
    last_loss: float | None = None
    grad_norm = torch.tensor(0.0)
    train_model.train()
    try:
        for step in range(start_step, config.steps):
            seed = step_seed(config.seed, step, world.rank)
            torch.manual_seed(seed)  # dropout and random shifts of this step, whatever ran before
            generator = torch.Generator().manual_seed(seed)
            items = [dataset[i] for i in plan.indices(step)]
            denoiser: Any = train_model
            if condition is not None:
                x0 = torch.stack([x for x, _ in items]).to(device, non_blocking=True)
                cond = torch.stack([c for _, c in items]).to(device, non_blocking=True)
                denoiser = lambda z, tt, cond=cond: train_model(z, tt, cond)  # noqa: E731 — v_loss calls model(z, t)
            else:
                x0 = torch.stack(items).to(device, non_blocking=True)
            t = sample_times(x0.shape[0], generator, config.time_sampling).to(device)
            noise = torch.randn(x0.shape, generator=generator).to(device)

            autocast = torch.autocast(device_kind, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with autocast:
                loss = v_loss(denoiser, x0, t, noise, config.weighting, config.min_snr_gamma)
            loss_value = loss.detach().float()
            if world.enabled:
                dist.all_reduce(loss_value)
                loss_value /= world.world
            value = float(loss_value)
            if not math.isfinite(value):
                if not bool(torch.isfinite(x0).all()):  # the data, not the learning rate
                    raise NonFiniteLoss(f"loss became {value} at step {step + 1} because the training data holds NaN/inf "
                                        f"values (cache {config.data}); rebuild it with `pdd-data prepare --force`")
                raise _non_finite("loss", value, step + 1, last_good, checkpoint_path, config)

            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)  # skips the step itself when fp16 gradients overflowed
                scaler.update()
            else:
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if not torch.isfinite(grad_norm):
                    raise _non_finite("gradient norm", float(grad_norm), step + 1, last_good, checkpoint_path, config)
                optimizer.step()
            scheduler.step()
            ema.update(model)

            done = step + 1
            last_loss = value
            interval_losses.append(value)
            if done % config.log_every == 0 or done == config.steps:
                elapsed = time.perf_counter() - interval_start
                rate = len(interval_losses) / elapsed if elapsed > 0 else 0.0
                log_line({"step": done, "loss": float(np.mean(interval_losses)), "loss_last": value,
                          "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "it_s": round(rate, 3),
                          "epoch": round(plan.epoch_of(done), 3), "time": round(time.time(), 3)})
                bar.update(done, float(np.mean(interval_losses)), rate)
                interval_losses, interval_start = [], time.perf_counter()
            if done % config.checkpoint_every == 0 or done == config.steps:
                write_checkpoint(done)
            if config.preview_every and (done % config.preview_every == 0 or done == config.steps):
                write_preview(done)
    except NonFiniteLoss as exc:
        log_line({"event": "stopped", "step": step + 1, "reason": str(exc)})
        raise
    finally:
        bar.close()

    if world.enabled:
        checksums = _weights_checksum(model)
        gathered: list[Any] = [None] * world.world
        dist.all_gather_object(gathered, checksums)
        agree = all(c == gathered[0] for c in gathered)
        log_line({"event": "ddp_check", "step": config.steps, "checksums": gathered, "agree": agree})
        if not agree:
            raise PddError(f"DDP replicas drifted apart: weight checksums {gathered}")
        dist.barrier()
    if world.is_main and console_print:
        print(f"pdd-train: done at step {config.steps}, loss {last_loss:.4f}; teacher checkpoint {checkpoint_path}")
    return TrainResult(step=config.steps, last_loss=last_loss, checkpoint=checkpoint_path, log=log_path,
                       parameters=count_parameters(model))


def _non_finite(what: str, value: float, step: int, last_good: int | None, checkpoint: Path,
                config: TrainConfig) -> NonFiniteLoss:
    if last_good is not None:
        kept = f"the last good checkpoint {checkpoint} (step {last_good}) is kept"
        hint = "continue with --resume and a lower --lr"
    else:
        kept = "no checkpoint had been written yet"
        hint = "start over with --force and a lower --lr"
    if config.device != "cpu" and torch.cuda.is_available():
        hint += " or --precision fp32"
    return NonFiniteLoss(f"{what} became {value} at step {step}; training stopped, {kept}; {hint}")
