"""PyTorch view of the mel cache: packed (C·F, T/C) float32 clips for the trainer, with optional random-offset augmentation.

The cache stays memory-mapped; each item reads one clip (two with `random_shift`) and packs it with the runtime's `pack`,
the single definition of the snake layout. Evaluation reads the cache with numpy directly (`MelCache.batches`/`sample`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from pdd.runtime.config import AudioConfig
from pdd.runtime.pack import pack
from pdd.training.cache import MelCache, open_cache


class MelDataset(Dataset):
    """Clips of one split of a mel cache as float32 tensors of the packed shape (C·F, T/C).

    With `random_shift`, an item is a window starting a random number of frames into its clip and continuing into the next clip
    of the same source file when that clip is adjacent or overlapping (as `pdd-data prepare` cuts them); clips without such a
    neighbour are returned unshifted. The offset is drawn from torch's RNG, so DataLoader worker seeding applies.
    """

    def __init__(self, cache: MelCache | str | os.PathLike[str], split: str = "train", random_shift: bool = False,
                 audio: AudioConfig | None = None) -> None:
        self.cache = cache if isinstance(cache, MelCache) else open_cache(cache)
        self.split = split
        self.random_shift = random_shift
        # `audio`: the cache's front end packed another way (AudioConfig.with_pack_mode, the packing ablations).
        self.config = self.cache.config if audio is None else audio
        if not self.config.same_front_end(self.cache.config):
            raise ValueError("MelDataset: the audio preset must be the cache's, packing aside")
        self.clips = self.cache.clips(split)
        self._next_gap = self._frame_gap_to_next_clip()

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def _frame_gap_to_next_clip(self) -> np.ndarray:
        """(N,) frames from clip i's start to clip i+1's start when i+1 continues the same source (0 = no neighbour)."""
        n = len(self)
        gaps = np.zeros(n, dtype=np.int64)
        if n < 2:
            return gaps
        hop = self.config.hop_length
        frames = self.config.frames
        sources = self.cache.source_ids(self.split)
        offsets = self.cache.offsets(self.split)
        delta = offsets[1:] - offsets[:-1]
        usable = (sources[1:] == sources[:-1]) & (delta > 0) & (delta % hop == 0) & (delta // hop <= frames - 1)
        gaps[:-1] = np.where(usable, delta // hop, 0)
        return gaps

    def max_shift(self, index: int) -> int:
        """Largest frame offset item `index` can be shifted by (0 when no neighbouring clip continues it)."""
        return int(self._next_gap[index])

    def shifted_window(self, per_clip: np.ndarray, index: int, shift: int) -> np.ndarray:
        """float32 window starting `shift` frames into clip `index` of `per_clip`, any array with one entry per clip and
        frames last (the mels; the piano rolls beside them), continued from the next clip (0 ≤ shift ≤ max_shift)."""
        clip = np.asarray(per_clip[index], dtype=np.float32)
        if shift == 0:
            return clip
        gap = self.max_shift(index)
        if not 0 < shift <= gap:
            raise ValueError(f"clip {index} can be shifted by 0..{gap} frames, not {shift}")
        following = np.asarray(per_clip[index + 1], dtype=np.float32)
        # Frames [shift, frames) of this clip, then the next clip's frames that follow them in time.
        start_in_next = self.config.frames - gap
        return np.concatenate([clip[..., shift:], following[..., start_in_next : start_in_next + shift]], axis=-1)

    def shifted_mel(self, index: int, shift: int) -> np.ndarray:
        """(n_mels, frames) float32: the window starting `shift` frames into clip `index` (0 ≤ shift ≤ max_shift)."""
        return self.shifted_window(self.clips, index, shift)

    def draw_shift(self, index: int) -> int:
        """This item's random shift (torch's RNG), 0 without `random_shift` or a neighbouring clip."""
        gap = self.max_shift(index) if self.random_shift else 0
        return int(torch.randint(0, gap + 1, ()).item()) if gap else 0

    def mel(self, index: int) -> np.ndarray:
        """(n_mels, frames) float32 mel of item `index` (at a random shift when `random_shift`)."""
        return self.shifted_mel(index, self.draw_shift(index))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            if -len(self) <= index < 0:
                index += len(self)
            else:
                raise IndexError(f"index {index} out of range for {len(self)} clips")
        return torch.from_numpy(pack(self.mel(index), self.config.pack_chunks, self.config.pack_order))
