"""Audio presets: the one definition of sample rate, STFT, mel and packing settings.

Presets are dataclasses that serialise to JSON; every checkpoint and engine bundle carries the preset it was made with,
so a model is never fed mels of another shape or scale.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.pack import PACK_MODES, PACK_ORDERS
from pdd.runtime.untrusted import printable


@dataclass(frozen=True)
class AudioConfig(JsonConfig):
    """An audio preset: sample rate, STFT, mel bands, clip length, dB range and snake packing — the one front end that
    training, export and the runtime share, saved in every checkpoint and bundle."""

    config_kind: ClassVar[str] = "audio config"

    name: str = "paper"
    sample_rate: int = 22050
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    frames: int = 384
    top_db: float = 80.0
    pack_chunks: int = 3
    pack_order: str = "snake"  # runtime/pack.py: "snake" (odd chunks reversed) or "reshape" (the ablation)

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        # The default order is left out, so every snake preset serialises exactly as before the field existed (and older
        # readers, which refuse unknown fields, still load it).
        data = super().to_dict()
        if data.get("pack_order") == "snake":
            del data["pack_order"]
        return data

    # -- packing variants (the ablations of docs/ablations.md) -----------------------------------------------------------------
    @property
    def pack_mode(self) -> str:
        """"none" when C = 1 (mel bins as channels over all frames), else the pack order."""
        return "none" if self.pack_chunks == 1 else self.pack_order

    def with_pack_mode(self, mode: str) -> "AudioConfig":
        """This front end packed another way: "none" → C = 1; "snake"/"reshape" → this preset's C in that order."""
        if mode not in PACK_MODES:
            raise ConfigError(f"unknown pack mode {mode!r}; use one of: {', '.join(PACK_MODES)}")
        if mode == "none":
            return dataclasses.replace(self, pack_chunks=1, pack_order="snake")
        return dataclasses.replace(self, pack_order=mode)

    def same_front_end(self, other: "AudioConfig") -> bool:
        """True when the two presets make the same mels (a cache of one feeds a model of the other), packing aside."""
        return dataclasses.replace(other, pack_chunks=self.pack_chunks, pack_order=self.pack_order) == self

    # -- derived sizes -------------------------------------------------------------------------------------------
    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def f_max(self) -> float:
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2.0

    @property
    def clip_samples(self) -> int:
        """Samples whose centred STFT has exactly `frames` frames."""
        return (self.frames - 1) * self.hop_length

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    @property
    def packed_channels(self) -> int:
        return self.pack_chunks * self.n_mels

    @property
    def packed_length(self) -> int:
        return self.frames // self.pack_chunks

    @property
    def packed_shape(self) -> tuple[int, int]:
        """Shape the model sees for one clip: (C·F, T/C)."""
        return (self.packed_channels, self.packed_length)

    # -- validation and serialisation ---------------------------------------------------------------------------
    def type_problems(self) -> list[str]:
        """Fields of the wrong JSON type (a string sample rate, a list for fmax), named one by one."""
        return _type_problems(self)

    def validate(self) -> None:
        type_problems = self.type_problems()
        if type_problems:  # before any arithmetic: a preset read from a file may hold any JSON value
            raise ConfigError(f"invalid audio preset {printable(repr(self.name), 60)}: " + "; ".join(type_problems))
        problems = []
        if self.sample_rate <= 0:
            problems.append("sample_rate must be positive")
        if self.win_length > self.n_fft or self.win_length <= 0:
            problems.append("win_length must be in 1..n_fft")
        if self.hop_length <= 0 or self.hop_length > self.win_length:
            problems.append("hop_length must be in 1..win_length")
        if self.n_mels <= 0:
            problems.append("n_mels must be positive")
        if not 0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            problems.append("need 0 <= fmin < fmax <= sample_rate/2")
        if self.pack_chunks <= 0 or self.frames <= 0 or self.frames % self.pack_chunks:
            problems.append(f"frames ({self.frames}) must be a positive multiple of pack_chunks ({self.pack_chunks})")
        if self.top_db <= 0:
            problems.append("top_db must be positive")
        if self.pack_order not in PACK_ORDERS:
            problems.append(f"pack_order must be one of {', '.join(PACK_ORDERS)}")
        if problems:
            raise ConfigError(f"invalid audio preset {self.name!r}: " + "; ".join(problems))


_INT_FIELDS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "frames", "pack_chunks")
_FLOAT_FIELDS = ("fmin", "top_db")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _type_problems(config: "AudioConfig") -> list[str]:
    problems = [] if isinstance(config.name, str) else ["name must be text"]
    problems += [f"{key} must be an integer" for key in _INT_FIELDS if not _is_int(getattr(config, key))]
    problems += [f"{key} must be a finite number" for key in _FLOAT_FIELDS if not _is_finite_number(getattr(config, key))]
    if config.fmax is not None and not _is_finite_number(config.fmax):
        problems.append("fmax must be a finite number or null")
    if not isinstance(config.pack_order, str):
        problems.append("pack_order must be text")
    return problems


PRESETS: dict[str, AudioConfig] = {
    # docs/architecture.md, "Audio front end": 1×128×384 → 3×128×128, ≈ 8.9 s at 22.05 kHz.
    "paper": AudioConfig(),
    # Seconds-fast shapes for tests: 96 frames ≈ 1.5 s at 16 kHz, packed to 96×32.
    "tiny": AudioConfig(
        name="tiny", sample_rate=16000, n_fft=512, win_length=512, hop_length=256, n_mels=32, frames=96, pack_chunks=3
    ),
}


def get_preset(name: str) -> AudioConfig:
    """The named audio preset, or a ConfigError that lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown audio preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
