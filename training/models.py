"""Which denoiser a config describes: the one place that maps an architecture name to its config and network, so
training, checkpoints, evaluation and export build unet1d and unet2d alike (docs/ablations.md).

A model config dict without an "arch" field is a 1D U-Net (every checkpoint written before the 2D one existed).
"""

from __future__ import annotations

from typing import Any, Union

from torch import nn

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.training.unet1d import UNET_PRESETS, UNet1D, UNetConfig, unet_config
from pdd.training.unet2d import UNET2D_PRESETS, UNet2D, UNet2DConfig, unet2d_config

ARCHS = ("unet1d", "unet2d")
ModelConfig = Union[UNetConfig, UNet2DConfig]


def presets_of(arch: str) -> dict[str, dict[str, Any]]:
    check_arch(arch)
    return UNET_PRESETS if arch == "unet1d" else UNET2D_PRESETS


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; use one of: {', '.join(ARCHS)}")
    return arch


def arch_of(config: ModelConfig) -> str:
    return "unet2d" if isinstance(config, UNet2DConfig) else "unet1d"


def model_config(arch: str, preset: str, audio: AudioConfig, top_channels: int = 0, cond_channels: int = 0) -> ModelConfig:
    """The `preset` of architecture `arch` sized for `audio` (its packed shape), checked against it; `cond_channels` for a
    conditioned renderer (runtime/conditioning.py)."""
    if check_arch(arch) == "unet2d":
        if top_channels or cond_channels:
            raise ConfigError("--top-width and --condition are options of the 1D U-Net; the 2D U-Net has neither")
        return unet2d_config(preset, audio)
    overrides = {key: value for key, value in (("top_channels", top_channels), ("cond_channels", cond_channels)) if value}
    return unet_config(preset, audio, **overrides)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A checkpoint's or run file's model config: 2D when it says arch "unet2d", else 1D (older files have no arch)."""
    if isinstance(data, dict) and data.get("arch", "unet1d") == "unet2d":
        return UNet2DConfig.from_dict(dict(data))
    if isinstance(data, dict) and "arch" in data:
        raise ConfigError(f"unknown model architecture {str(data['arch'])[:40]!r}; use one of: {', '.join(ARCHS)}")
    return UNetConfig.from_dict(data)


def build_denoiser(config: ModelConfig) -> nn.Module:
    """The network a config describes (new weights)."""
    return UNet2D(config) if isinstance(config, UNet2DConfig) else UNet1D(config)
