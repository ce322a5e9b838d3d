"""Packing: (F, T) → (C·F, T/C), time cut into C chunks stacked along the channel axis (why: docs/architecture.md,
"Audio front end").

Two orders, one home: "snake" (the default and the paper's: odd chunks time-reversed, so neighbours in time stay neighbours)
and "reshape" (chunks stacked as they are, the ablation that tests whether the reversal matters). With C = 1 both are the
identity ("no packing": mel bins as channels over every frame). The order lives in one place, `pack_time_index`; numpy here
and torch/ONNX graphs elsewhere gather with that index or its inverse `unpack_index`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pdd.runtime.errors import ConfigError

PACK_ORDERS = ("snake", "reshape")
PACK_MODES = ("snake", "reshape", "none")  # what `pdd-train --pack` offers: an order, or C = 1


def check_order(order: str) -> str:
    if order not in PACK_ORDERS:
        raise ConfigError(f"unknown pack order {order!r}; use one of: {', '.join(PACK_ORDERS)}")
    return order


@lru_cache(maxsize=64)
def pack_time_index(frames: int, chunks: int, order: str = "snake") -> np.ndarray:
    """(C, L) source frame of every packed position: chunk c, position p holds frame c·L + p, except that "snake" reverses
    odd chunks (c·L + L−1−p)."""
    check_order(order)
    if chunks <= 0 or frames <= 0 or frames % chunks:
        raise ConfigError(f"cannot pack {frames} frames into {chunks} chunks: frames must be a positive multiple of chunks")
    length = frames // chunks
    pos = np.arange(length)
    reversed_chunk = (lambda c: order == "snake" and c % 2 == 1)
    index = np.stack([c * length + (length - 1 - pos if reversed_chunk(c) else pos) for c in range(chunks)]).astype(np.int64)
    index.setflags(write=False)
    return index


def snake_time_index(frames: int, chunks: int) -> np.ndarray:
    """`pack_time_index` of the snake order (the default layout)."""
    return pack_time_index(frames, chunks, "snake")


@lru_cache(maxsize=64)
def unpack_index(frames: int, chunks: int, order: str = "snake") -> np.ndarray:
    """(T,) position in the flattened (C·L) packed time axis that holds each original frame: the inverse permutation."""
    flat = pack_time_index(frames, chunks, order).reshape(-1)
    inverse = np.empty_like(flat)
    inverse[flat] = np.arange(flat.size)
    inverse.setflags(write=False)
    return inverse


def unsnake_index(frames: int, chunks: int) -> np.ndarray:
    """`unpack_index` of the snake order."""
    return unpack_index(frames, chunks, "snake")


def pack(mel: np.ndarray, chunks: int, order: str = "snake") -> np.ndarray:
    """(..., F, T) → (..., C·F, T/C)."""
    *lead, n_mels, frames = mel.shape
    index = pack_time_index(frames, chunks, order)
    gathered = mel[..., index]  # (..., F, C, L)
    moved = np.moveaxis(gathered, -2, -3)  # (..., C, F, L)
    return np.ascontiguousarray(moved.reshape(*lead, chunks * n_mels, frames // chunks))


def unpack(packed: np.ndarray, chunks: int, order: str = "snake") -> np.ndarray:
    """(..., C·F, L) → (..., F, C·L): the exact inverse of `pack` with the same chunks and order."""
    *lead, channels, length = packed.shape
    if channels % chunks:
        raise ConfigError(f"cannot unpack {channels} channels into {chunks} chunks")
    n_mels = channels // chunks
    split = packed.reshape(*lead, chunks, n_mels, length)
    flat = np.moveaxis(split, -3, -2).reshape(*lead, n_mels, chunks * length)  # (..., F, C·L) in packed order
    return np.ascontiguousarray(flat[..., unpack_index(chunks * length, chunks, order)])
