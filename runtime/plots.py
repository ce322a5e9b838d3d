"""Figures shared by every command: matplotlib loaded lazily (an optional extra), PNGs written atomically.

One spectrogram style for previews, `pdd-run --plot`, evaluation grids and model cards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend, or a ConfigError naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'pdd[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save and close `fig` as `path` through a temp file, so a reader never sees half a PNG."""
    from io import BytesIO

    from pdd.runtime.fileio import atomic_write_bytes

    plt = pyplot()
    path = Path(path)
    encoded = BytesIO()  # then the one atomic writer: no predictable temp name a planted symlink could redirect
    try:
        fig.savefig(encoded, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, encoded.getvalue())


def save_spectrogram_png(path: str | os.PathLike[str], mel: np.ndarray, audio: AudioConfig, title: str = "") -> Path:
    """One normalised log-mel (n_mels, frames) in [-1, 1] as a PNG with a time axis in seconds."""
    plt = pyplot()
    seconds = mel.shape[-1] * audio.hop_length / audio.sample_rate
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    image = ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1, extent=(0, seconds, 0, mel.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="normalised log-mel")
    fig.tight_layout()
    return save_figure(fig, path)
