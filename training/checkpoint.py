"""Checkpoints of teachers and students: one format, written atomically, read with `weights_only=True`
(docs/architecture.md, "Reliability").

A checkpoint is a plain dict of tensors and JSON-like values:

    format     "pdd-checkpoint/1"
    info       CheckpointInfo.to_dict(): kind, audio preset, model config, student steps, lineage, train step, parameterisation
    model      the trained weights (state_dict)
    ema        the EMA weights (what is sampled and exported) or None; ema_meta its decay and update count
    optimizer, scheduler, rng, extra     what a resumed run needs (None when not saved)

Writers call `make_checkpoint_state(...)` and `save_checkpoint(path, state)`; readers call `load_denoiser(path)` for a ready
model, or `load_checkpoint(path)` + `checkpoint_info(state)` for everything.

A checkpoint from elsewhere is untrusted: `weights_only` refuses pickled code, `CheckpointInfo.from_dict` refuses wrong
types and out-of-range numbers, and `build_model` counts the recorded config's parameters on the meta device before
allocating, so an info claiming a billion-channel model is refused instead of exhausting memory.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pdd.runtime import fileio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.untrusted import bounded_int, check_audio_bounds, printable
from pdd.training.ema import EMA, unwrap
from pdd.training.models import ModelConfig, build_denoiser, model_config_from_dict

CHECKPOINT_FORMAT = "pdd-checkpoint/1"
KINDS = ("teacher", "student")
MAX_STUDENT_STEPS = 1024  # the finest DDIM grid pdd samples
MAX_TRAIN_STEP = 10**12
# Bounds on a recorded model config (pdd's largest, `paper`, is ≈ 45 M parameters with numbers below 1024).
MAX_MODEL_NUMBER = 1 << 16
MAX_MODEL_LIST = 16
MAX_RES_BLOCKS = 64
MAX_MODEL_PARAMS = 1_000_000_000


class CheckpointError(PddError):
    """A checkpoint file that is missing, not ours, corrupt, or does not fit the run that wants it."""


@dataclass
class CheckpointInfo:
    """What a checkpoint is: enough to rebuild its model and to refuse feeding it the wrong data."""

    kind: str
    audio: AudioConfig
    model: ModelConfig  # a 1D or 2D U-Net config (training/models.py); files without "arch" are 1D
    steps: int | None = None  # a student's sampling-step count; None for a teacher (any step count)
    lineage: list[dict[str, Any]] = field(default_factory=list)  # where it came from, oldest first
    train_step: int = 0
    parameterization: str = "v"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CheckpointError(f"checkpoint kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "student" and (not isinstance(self.steps, int) or self.steps < 1):
            raise CheckpointError(f"a student checkpoint needs a positive step count, got {self.steps!r}")
        if self.parameterization != "v":
            raise CheckpointError(f"unsupported parameterisation {self.parameterization!r}; pdd models predict v")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "audio": self.audio.to_dict(),
            "model": self.model.to_dict(),
            "steps": self.steps,
            "lineage": [dict(entry) for entry in self.lineage],
            "train_step": int(self.train_step),
            "parameterization": self.parameterization,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointInfo":
        try:
            if not isinstance(data.get("kind"), str) or not isinstance(data.get("lineage", []), list):
                raise TypeError("kind must be a string and lineage a list")
            check_audio_bounds(data["audio"], "audio", CheckpointError)
            check_model_bounds(data["model"])
            steps = data.get("steps")
            if steps is not None:
                bounded_int(steps, "steps", 1, MAX_STUDENT_STEPS, CheckpointError)
            return cls(
                kind=data["kind"],
                audio=AudioConfig.from_dict(dict(data["audio"])),
                model=model_config_from_dict(dict(data["model"])),
                steps=steps,
                lineage=[dict(entry) for entry in data.get("lineage", [])],
                train_step=bounded_int(data.get("train_step", 0), "train_step", 0, MAX_TRAIN_STEP, CheckpointError),
                parameterization=data.get("parameterization", "v"),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, ConfigError, CheckpointError) as exc:
            raise CheckpointError(f"checkpoint info is incomplete or invalid: {printable(exc, 200)}") from None


def check_model_bounds(model: Any) -> None:
    """Every number and list of a recorded U-Net config within generous bounds, before even the meta-device count builds
    it: a config of a million residual blocks would take minutes to build on any device."""
    if not isinstance(model, dict):
        raise CheckpointError("model config must be an object")
    for key, value in model.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if len(values) > MAX_MODEL_LIST:
            raise CheckpointError(f"model config {printable(key, 40)} lists {len(values)} values, over {MAX_MODEL_LIST}")
        for item in values:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not abs(item) <= MAX_MODEL_NUMBER:
                raise CheckpointError(f"model config {printable(key, 40)} is {printable(repr(item), 40)}, over {MAX_MODEL_NUMBER}")
    blocks = model.get("num_res_blocks")
    if isinstance(blocks, int) and blocks > MAX_RES_BLOCKS:
        raise CheckpointError(f"model config num_res_blocks is {blocks}, over {MAX_RES_BLOCKS}")


def make_checkpoint_state(
    model: nn.Module,
    info: CheckpointInfo,
    ema: EMA | nn.Module | dict[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict `save_checkpoint` writes. `model` may be DDP-wrapped; `ema` an EMA, a module, or a state_dict."""
    ema_weights: dict[str, torch.Tensor] | None
    ema_meta: dict[str, Any] | None = None
    if isinstance(ema, EMA):
        ema_weights, ema_meta = ema.weights(), ema.meta()
    elif isinstance(ema, nn.Module):
        ema_weights = unwrap(ema).state_dict()
    else:
        ema_weights = ema
    return {
        "format": CHECKPOINT_FORMAT,
        "info": info.to_dict(),
        "model": _cpu(unwrap(model).state_dict()),
        "ema": _cpu(ema_weights) if ema_weights is not None else None,
        "ema_meta": ema_meta,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "extra": extra or {},
    }


def _cpu(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu") for name, value in weights.items()}


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, then os.replace (never a half file)."""
    path = Path(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("refusing to save a dict that make_checkpoint_state did not build")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {fileio.describe_os_error(exc)}") from None
    # Interrupts wait for the save: torch's zip writer, torn by a KeyboardInterrupt, raises its own error mid-unwind.
    with fileio.deferred_interrupts():
        target = fileio.AtomicFile(path, error=CheckpointError)
        try:
            torch.save(state, target.handle)
        except OSError as exc:  # disk full, permissions: the previous checkpoint stays as it was
            target.abort()
            raise CheckpointError(f"cannot write checkpoint {path}: {fileio.describe_os_error(exc)}; "
                                  "the previous checkpoint is unchanged") from None
        except RuntimeError as exc:  # torch reports a failed write (a full disk) as its own RuntimeError
            target.abort()
            raise CheckpointError(f"cannot write checkpoint {path}: {_write_failure(exc)}; "
                                  "the previous checkpoint is unchanged") from None
        except BaseException:
            target.abort()
            raise
        return target.commit()


def _write_failure(exc: RuntimeError) -> str:
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError):
        return fileio.describe_os_error(cause)
    if "file write failed" in text or "unexpected pos" in text:
        return "the write failed (is the disk full?)"
    return printable(text.splitlines()[0] if text else type(exc).__name__, 200)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with `weights_only=True`; anything that is not a pdd checkpoint → CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — torch.load raises many types for foreign/corrupt files; all mean the same
        raise CheckpointError(f"{path}: not a readable pdd checkpoint ({_load_failure(path, exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a pdd checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    if not isinstance(state.get("info"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: checkpoint lacks its info or model weights")
    return state


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load refused a file, in words a user can act on (torch's own messages run to paragraphs)."""
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint file"
    text = str(exc).strip()
    if "Weights only load failed" in text:
        return "it holds Python objects that safe weights_only loading refuses; pdd checkpoints hold only tensors and plain data"
    return (text.splitlines()[0].split(". ")[0] if text else type(exc).__name__)[:200]


def checkpoint_info(state: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo.from_dict(state["info"])


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """The CheckpointInfo of the file at `path`."""
    return checkpoint_info(load_checkpoint(path))


def check_compatible(info: CheckpointInfo, audio: AudioConfig, model: ModelConfig, what: str = "checkpoint") -> None:
    """Refuse a checkpoint made for another audio preset or model config, naming the first differing fields."""
    if info.audio != audio:
        raise CheckpointError(f"{what} was made for audio preset {info.audio.name!r} {_diff(info.audio.to_dict(), audio.to_dict())}, "
                              f"not {audio.name!r}")
    if info.model != model:
        raise CheckpointError(f"{what} holds model {info.model.name!r} {_diff(info.model.to_dict(), model.to_dict())}, "
                              f"not {model.name!r} with this config")


def _diff(have: dict[str, Any], want: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    shown = ", ".join(f"{k}={have.get(k)!r} vs {want.get(k)!r}" for k in keys[:3])
    return f"({shown})" if shown else ""


def build_model(info: CheckpointInfo, weights: dict[str, torch.Tensor], path: str | os.PathLike[str] = "checkpoint") -> nn.Module:
    """The U-Net (1D or 2D) of the recorded config with `weights` loaded strictly (its size checked against them first)."""
    if not isinstance(weights, dict) or not all(isinstance(w, torch.Tensor) for w in weights.values()):
        raise CheckpointError(f"{path}: the weights are not a dict of tensors")
    held = stored_values(weights)
    try:
        with torch.device("meta"):  # count parameters without allocating them
            needed = sum(p.numel() for p in build_denoiser(info.model).parameters())
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{path}: the recorded model config cannot be built ({printable(exc, 200)})") from None
    if needed > held:
        raise CheckpointError(f"{path}: the recorded model config needs {needed} parameters, the file holds {held} values")
    if needed > MAX_MODEL_PARAMS:
        raise CheckpointError(f"{path}: the recorded model config needs {needed:,} parameters, over the limit of "
                              f"{MAX_MODEL_PARAMS:,}; not a pdd model")
    model = allocate(lambda: build_denoiser(info.model), path, needed)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded model config ({str(exc).splitlines()[0]})") from None
    return model


def allocate(build: Callable[[], nn.Module], path: str | os.PathLike[str], params: int) -> nn.Module:
    """`build()`, with an allocation failure (MemoryError, or torch's RuntimeError from its allocator) as one
    CheckpointError: the bounds above keep honest files far from it, but a busy machine may still be short."""
    try:
        return build()
    except MemoryError:
        pass
    except RuntimeError as exc:
        if "alloc" not in str(exc).lower():
            raise
    raise CheckpointError(f"{path}: out of memory allocating a model of {params:,} parameters")


def stored_values(weights: dict[str, torch.Tensor]) -> int:
    """Values the tensors really store: a tensor expanded from one element claims any numel but stores one value, so
    counting numel would let a small file pass for a large model."""
    storages = {w.untyped_storage().data_ptr(): w.untyped_storage().nbytes() // max(w.element_size(), 1)
                for w in weights.values()}
    return sum(storages.values())


def load_denoiser(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointInfo]:
    """The checkpoint's model with EMA weights when present, in eval mode on `device`, and its info."""
    return denoiser_from_state(load_checkpoint(path), path, device)


def denoiser_from_state(state: dict[str, Any], path: str | os.PathLike[str] = "checkpoint",
                        device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointInfo]:  # fmt: skip
    """`load_denoiser` for a checkpoint already read with `load_checkpoint` (callers that also need its extras)."""
    info = checkpoint_info(state)
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    model = build_model(info, weights, path)
    return model.to(device).eval(), info
