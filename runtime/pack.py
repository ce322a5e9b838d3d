"""Snake packing: (F, T) → (C·F, T/C), odd chunks time-reversed so neighbours in time stay neighbours (why:
docs/architecture.md, "Audio front end").

The order lives in one place, `snake_time_index`; numpy here and torch/ONNX graphs elsewhere gather with that index.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pdd.runtime.errors import ConfigError


@lru_cache(maxsize=32)
def snake_time_index(frames: int, chunks: int) -> np.ndarray:
    """(C, L) source frame of every packed position: chunk c, position p holds frame c·L + p (c even) or c·L + L−1−p (c odd)."""
    if chunks <= 0 or frames <= 0 or frames % chunks:
        raise ConfigError(f"cannot pack {frames} frames into {chunks} chunks: frames must be a positive multiple of chunks")
    length = frames // chunks
    pos = np.arange(length)
    index = np.stack([c * length + (pos if c % 2 == 0 else length - 1 - pos) for c in range(chunks)]).astype(np.int64)
    index.setflags(write=False)
    return index


@lru_cache(maxsize=32)
def unsnake_index(frames: int, chunks: int) -> np.ndarray:
    """(T,) position in the flattened (C·L) packed time axis that holds each original frame: the inverse permutation."""
    flat = snake_time_index(frames, chunks).reshape(-1)
    inverse = np.empty_like(flat)
    inverse[flat] = np.arange(flat.size)
    inverse.setflags(write=False)
    return inverse


def pack(mel: np.ndarray, chunks: int) -> np.ndarray:
    """(..., F, T) → (..., C·F, T/C)."""
    *lead, n_mels, frames = mel.shape
    index = snake_time_index(frames, chunks)
    gathered = mel[..., index]  # (..., F, C, L)
    moved = np.moveaxis(gathered, -2, -3)  # (..., C, F, L)
    return np.ascontiguousarray(moved.reshape(*lead, chunks * n_mels, frames // chunks))


def unpack(packed: np.ndarray, chunks: int) -> np.ndarray:
    """(..., C·F, L) → (..., F, C·L): the exact inverse of `pack`."""
    *lead, channels, length = packed.shape
    if channels % chunks:
        raise ConfigError(f"cannot unpack {channels} channels into {chunks} chunks")
    n_mels = channels // chunks
    split = packed.reshape(*lead, chunks, n_mels, length)
    flat = np.moveaxis(split, -3, -2).reshape(*lead, n_mels, chunks * length)  # (..., F, C·L) in packed order
    return np.ascontiguousarray(flat[..., unsnake_index(chunks * length, chunks)])
