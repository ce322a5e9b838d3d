"""Training the symbolic prior (`pdd-prior train`): next-token cross-entropy on score windows (training/prior_data.py),
AdamW with warm-up and cosine decay, gradient clipping, atomic checkpoints with optimiser and RNG state (resume continues
where the run stopped), a JSON-lines log with validation loss, a NaN stop that keeps the last good checkpoint.

The checkpoint (`prior.pt`, kind "prior") holds the EMA-free weights (a next-token model does not need EMA at this size),
the model config, the training config, and the works it was allowed to read (for the held-out check).
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
import torch.nn.functional as F

from pdd.runtime.errors import ConfigError
from pdd.runtime.events import PAD
from pdd.runtime.jsonconfig import JsonConfig
from pdd.training.cache import open_cache
from pdd.training.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from pdd.training.optim import NonFiniteLoss, lr_factor
from pdd.training.prior import EventPrior, PriorConfig, count_parameters, prior_config
from pdd.training.prior_data import WindowSampler
from pdd.training.runfolder import RunKind, append_log, plot_loss, prepare_resumable_run, truncate_log
from pdd.training.score_notes import heldout_work_ids, load_scores

CHECKPOINT_FILE, RUN_FILE, LOG_FILE, LOSS_PNG = "prior.pt", "run.json", "log.jsonl", "loss.png"
CHECKPOINT_KIND = "prior"
RESUME_MAY_CHANGE = frozenset({"steps", "threads", "log_every", "checkpoint_every"})


@dataclass(frozen=True)
class PriorTrainConfig(JsonConfig):
    config_kind: ClassVar[str] = "prior training config"

    data: str  # a `pdd-data scores` folder
    heldout_from: str | None = None  # a mel cache whose held-out works the prior must never read
    preset: str = "small"
    steps: int = 6000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 200
    val_batches: int = 4
    threads: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "val_batches"):
            if not 1 <= int(getattr(self, name)) <= 10**9:
                problems.append(f"{name.replace('_', '-')} must be >= 1")
        if self.batch_size > 4096 or self.val_batches > 1000:
            problems.append("batch-size must be <= 4096 and val-batches <= 1000")
        if self.checkpoint_every % self.log_every:
            problems.append("checkpoint-every must be a multiple of log-every")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            problems.append("lr must be positive, min-lr-ratio in [0, 1], warmup-steps >= 0")
        if self.weight_decay < 0 or not self.grad_clip > 0:
            problems.append("weight-decay must be >= 0 and grad-clip > 0")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            problems.append("threads must be in 1..1024")
        if problems:
            raise ConfigError("invalid prior training settings: " + "; ".join(problems))
        prior_config(self.preset)  # an unknown preset is refused before any work


def run_files(out: Path) -> list[Path]:
    return [out / name for name in (RUN_FILE, CHECKPOINT_FILE, LOG_FILE, LOSS_PNG)]


def prepare_prior_run(out: str | os.PathLike[str], given: dict[str, Any], *, resume: bool, force: bool) -> PriorTrainConfig:
    kind = RunKind(PriorTrainConfig, "prior_train", CHECKPOINT_FILE, RUN_FILE, RESUME_MAY_CHANGE, run_files, "SCORES_DIR")
    return prepare_resumable_run(kind, out, given, resume=resume, force=force)


def excluded_works(config: PriorTrainConfig) -> frozenset[str]:
    if config.heldout_from is None:
        return frozenset()
    return frozenset(heldout_work_ids(open_cache(config.heldout_from)))


def window_loss(model: EventPrior, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-padding targets of (B, context) windows."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD)


def validation_loss(model: EventPrior, sampler: WindowSampler, config: PriorTrainConfig) -> float | None:
    if len(sampler) == 0:
        return None
    rng = np.random.default_rng(12345)  # the same windows at every evaluation
    model.eval()
    with torch.no_grad():
        losses = [float(window_loss(model, torch.from_numpy(sampler.batch(config.batch_size, rng))))
                  for _ in range(config.val_batches)]  # fmt: skip
    model.train()
    return float(np.mean(losses))


def prior_state(model: EventPrior, optimizer: torch.optim.Optimizer, step: int, config: PriorTrainConfig,
                excluded: frozenset[str], rng: np.random.Generator) -> dict[str, Any]:  # fmt: skip
    return {"format": CHECKPOINT_FORMAT, "kind": CHECKPOINT_KIND, "info": {"prior": model.config.to_dict()},
            "step": int(step), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "train": config.to_dict(), "excluded_works": sorted(excluded),
            "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state}}  # fmt: skip


def load_prior(path: str | os.PathLike[str]) -> tuple[EventPrior, dict[str, Any]]:
    """The prior of a `pdd-prior train` checkpoint in eval mode, and the checkpoint; CheckpointError for anything else."""
    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a prior checkpoint (pass the prior.pt of a `pdd-prior train` run)")
    try:
        config = PriorConfig.from_dict(state["info"]["prior"])
        model = EventPrior(config)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: damaged prior checkpoint ({str(exc).splitlines()[0][:160]})") from None
    return model.eval(), state


def train_prior(config: PriorTrainConfig, out: str | os.PathLike[str], *, resume: bool = False,
                log: Callable[[str], None] = print, stop_at: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) the run in `out` to `config.steps`; `stop_at` ends it early at a checkpoint step, as an
    interruption would (the schedule still plans for `config.steps`, so a resumed run continues it exactly)."""
    out = Path(out)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    scores = load_scores(config.data)
    excluded = excluded_works(config)
    train_windows = WindowSampler(scores, prior_config(config.preset).context, "train", excluded)
    val_windows = WindowSampler(scores, prior_config(config.preset).context, "val", excluded)
    if len(train_windows) == 0:
        raise ConfigError(f"{config.data}: no training works left after the held-out exclusion")
    torch.manual_seed(config.seed)
    model = EventPrior(prior_config(config.preset))
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))  # fmt: skip
    rng = np.random.default_rng(config.seed)
    start = 0
    if resume:
        state = load_checkpoint(out / CHECKPOINT_FILE)
        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{out / CHECKPOINT_FILE}: not a prior checkpoint")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            rng.bit_generator.state = state["rng"]["numpy"]
            start = int(state["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{out / CHECKPOINT_FILE}: damaged prior checkpoint ({str(exc)[:120]}); "
                                  "start over with --force") from None  # fmt: skip
        if start >= config.steps:
            raise ConfigError(f"{out} is already at step {start} of {config.steps}; pass a larger --steps to go on")
        truncate_log(out / LOG_FILE, start)
    else:
        out.mkdir(parents=True, exist_ok=True)
    from pdd.runtime.fileio import write_json_atomic

    write_json_atomic(out / RUN_FILE, {"format": "pdd-prior-run/1", "prior_train": config.to_dict(),
                                       "prior": model.config.to_dict(), "parameters": count_parameters(model),
                                       "train_works": len(train_windows), "val_works": len(val_windows),
                                       "excluded_works": len(excluded)})  # fmt: skip
    log(f"pdd-prior: {count_parameters(model) / 1e6:.2f} M params, {len(train_windows)} training works "
        f"({len(val_windows)} validate, {len(excluded)} held out), steps {start}→{config.steps}; run folder {out}")
    model.train()
    losses: list[float] = []
    tick = time.perf_counter()
    last_good = start if resume else None
    for step in range(start, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)
        tokens = torch.from_numpy(train_windows.batch(config.batch_size, rng))
        loss = window_loss(model, tokens)
        if not math.isfinite(float(loss.detach())):
            append_log(out / LOG_FILE, {"event": "stopped", "step": step + 1, "reason": "non-finite loss"})
            raise NonFiniteLoss(f"loss became {float(loss)} at step {step + 1}; the last good checkpoint "
                                f"(step {last_good}) is kept in {out / CHECKPOINT_FILE}; try a lower --lr")  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            entry: dict[str, Any] = {"step": done, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
                                     "it_s": round(len(losses) / (time.perf_counter() - tick), 3)}  # fmt: skip
            if done % config.checkpoint_every == 0 or done == config.steps:
                entry["val_loss"] = validation_loss(model, val_windows, config)
            append_log(out / LOG_FILE, entry)
            losses, tick = [], time.perf_counter()
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(out / CHECKPOINT_FILE, prior_state(model, optimizer, done, config, excluded, rng))
            plot_loss(out / LOG_FILE, out / LOSS_PNG)
            last_good = done
            if stop_at is not None and done >= stop_at:
                return {"step": done, "checkpoint": str(out / CHECKPOINT_FILE)}
    return {"step": config.steps, "checkpoint": str(out / CHECKPOINT_FILE)}
