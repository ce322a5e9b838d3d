"""Mel cache format (open_cache, CacheWriter, write_synthetic_cache) and the torch MelDataset over it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import PddError
from pdd.runtime.mel import log_mel
from pdd.runtime.pack import pack, unpack
from pdd.training.cache import (
    CacheError,
    CacheWriter,
    MelCache,
    cut_clips,
    open_cache,
    synthetic_piece,
    write_synthetic_cache,
)
from pdd.training.data import MelDataset

TINY = get_preset("tiny")


@pytest.fixture
def tiny_cache(tmp_path):
    return open_cache(write_synthetic_cache(tmp_path / "cache", TINY, n_train=16, n_heldout=8, seed=0))


def test_synthetic_cache_is_fast_and_well_formed(tmp_path):
    started = time.process_time()  # CPU time: the fixture's budget, independent of other jobs sharing the machine
    path = write_synthetic_cache(tmp_path / "cache", TINY, n_train=16, n_heldout=8)
    assert time.process_time() - started < 1.0
    cache = open_cache(path)
    assert isinstance(cache, MelCache)
    assert cache.config == TINY
    assert cache.splits == ["train", "heldout"]
    train, held = cache.clips("train"), cache.clips("heldout")
    assert train.shape == (16, TINY.n_mels, TINY.frames) and held.shape == (8, TINY.n_mels, TINY.frames)
    assert isinstance(train, np.memmap) and not train.flags.writeable
    assert train.dtype == np.float16
    assert -1.0 <= float(train.min()) and float(train.max()) <= 1.0
    # Music, not silence or a flat field: a real spread of levels.
    assert float(train.max()) > 0.0 and float(np.std(train.astype(np.float32))) > 0.1
    assert len(cache.sources("train")) == 16 and len(cache.sources("heldout")) == 8
    assert not set(cache.sources("train")) & set(cache.sources("heldout"))
    assert cache.index["format"] == "pdd-melcache/1"


def test_synthetic_cache_is_deterministic_per_seed(tmp_path):
    a = open_cache(write_synthetic_cache(tmp_path / "a", TINY, 4, 2, seed=3)).clips("train")
    b = open_cache(write_synthetic_cache(tmp_path / "b", TINY, 4, 2, seed=3)).clips("train")
    c = open_cache(write_synthetic_cache(tmp_path / "c", TINY, 4, 2, seed=4)).clips("train")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_clips_match_the_runtime_front_end(tmp_path):
    wave = synthetic_piece(TINY, 2 * TINY.clip_seconds + 0.1, seed=5)
    clips, starts = cut_clips(wave, TINY, TINY.clip_samples)
    writer = CacheWriter(tmp_path / "c", TINY, dtype="float32")
    writer.add("train", log_mel(clips, TINY), "piece.wav", starts)
    writer.commit()
    cache = open_cache(tmp_path / "c")
    np.testing.assert_array_equal(np.asarray(cache.clips("train")), log_mel(clips, TINY))
    assert cache.sources("train") == ["piece.wav", "piece.wav"]
    assert cache.offsets("train").tolist() == [0, TINY.clip_samples]


def test_numpy_readers(tiny_cache):
    batches = list(tiny_cache.batches("train", batch_size=5))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 1]
    assert all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), np.asarray(tiny_cache.clips("train"), dtype=np.float32))
    sample = tiny_cache.sample("heldout", 3, seed=1)
    assert sample.shape == (3, TINY.n_mels, TINY.frames) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample, tiny_cache.sample("heldout", 3, seed=1))
    assert tiny_cache.sample("heldout", 100).shape[0] == 8
    with pytest.raises(PddError):
        next(tiny_cache.batches("train", batch_size=0))
    with pytest.raises(CacheError, match="no split 'valid'"):
        tiny_cache.clips("valid")


# -- bad caches ---------------------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_cache(tmp_path):
    with pytest.raises(CacheError) as exc:
        open_cache(tmp_path / "nowhere")
    assert "pdd-data prepare" in _one_line(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="not a mel cache"):
        open_cache(tmp_path / "empty")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "index.json").write_text("{not json"), "corrupt"),
        (lambda p: (p / "index.json").write_text(json.dumps({"format": "something/9"})), "format"),
        (lambda p: (p / "index.json").write_text("[]"), "format"),
        (lambda p: _edit_index(p, lambda i: i["splits"]["train"].update(clips=99)), "corrupt"),
        (lambda p: _edit_index(p, lambda i: i["config"].update(frames=7)), "corrupt"),
        (lambda p: _edit_index(p, lambda i: i.update(dtype="int8")), "corrupt"),
        (lambda p: _shard(p, "train").unlink(), "missing"),
        (lambda p: _truncate(_shard(p, "heldout")), "bytes, expected"),
    ],
)
def test_corrupt_cache_is_one_clear_error(tmp_path, damage, message):
    path = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2)
    damage(path)
    with pytest.raises(CacheError) as exc:
        open_cache(path)
    assert message in _one_line(exc)


def _edit_index(path, change):
    index = json.loads((path / "index.json").read_text())
    change(index)
    (path / "index.json").write_text(json.dumps(index))


def _shard(path, split):
    return path / json.loads((path / "index.json").read_text())["splits"][split]["file"]


def _truncate(shard):
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


def test_interrupted_rebuild_keeps_the_old_cache(tmp_path):
    path = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2, seed=0)
    before = np.array(open_cache(path).clips("train"))
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter(path, TINY) as writer:
            writer.add("train", np.zeros((3, TINY.n_mels, TINY.frames), np.float32), "x.wav", [0, 1, 2])
            raise KeyboardInterrupt
    after = open_cache(path)
    np.testing.assert_array_equal(np.asarray(after.clips("train")), before)
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]


def test_rebuild_replaces_shards_and_removes_old_ones(tmp_path):
    path = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2, seed=0)
    old_files = {p.name for p in path.glob("*.bin")}
    write_synthetic_cache(path, TINY, 6, 2, seed=1)
    new_files = {p.name for p in path.glob("*.bin")}
    assert not old_files & new_files and len(new_files) == 2
    assert open_cache(path).clips("train").shape[0] == 6


def test_writer_rejects_wrong_shapes(tmp_path):
    writer = CacheWriter(tmp_path / "c", TINY)
    with pytest.raises(ValueError):
        writer.add("train", np.zeros((2, TINY.n_mels + 1, TINY.frames)), "a.wav", [0, 1])
    with pytest.raises(ValueError):
        writer.add("train", np.zeros((2, TINY.n_mels, TINY.frames)), "a.wav", [0])
    with pytest.raises(PddError):
        CacheWriter(tmp_path / "d", TINY, dtype="int16")
    writer.abort()


# -- torch Dataset ------------------------------------------------------------------------------------------------------


def test_dataset_items_are_packed_clips(tiny_cache):
    ds = MelDataset(tiny_cache, "train")
    assert len(ds) == 16
    item = ds[3]
    assert item.dtype == torch.float32 and tuple(item.shape) == TINY.packed_shape
    expected = pack(np.asarray(tiny_cache.clips("train")[3], dtype=np.float32), TINY.pack_chunks)
    np.testing.assert_array_equal(item.numpy(), expected)
    np.testing.assert_array_equal(unpack(item.numpy(), TINY.pack_chunks), tiny_cache.clips("train")[3].astype(np.float32))
    assert torch.equal(ds[-1], ds[15])
    with pytest.raises(IndexError):
        ds[16]


def test_dataset_opens_a_path_and_works_with_a_dataloader(tmp_path):
    path = write_synthetic_cache(tmp_path / "cache", TINY, 6, 2)
    ds = MelDataset(path, "heldout")
    assert len(ds) == 2
    loader = torch.utils.data.DataLoader(MelDataset(path, "train", random_shift=True), batch_size=4, shuffle=True)
    batch = next(iter(loader))
    assert batch.shape == (4, *TINY.packed_shape) and batch.dtype == torch.float32
    with pytest.raises(CacheError):
        MelDataset(tmp_path / "missing")


def test_random_shift_continues_into_the_next_clip_of_the_same_source(tmp_path):
    """A shifted item equals the log-mel of the audio starting `shift` hops later (away from the clip edges)."""
    wave = synthetic_piece(TINY, 3 * TINY.clip_seconds + 0.2, seed=11)
    clips, starts = cut_clips(wave, TINY, TINY.clip_samples)
    writer = CacheWriter(tmp_path / "c", TINY, dtype="float32")
    writer.add("train", log_mel(clips, TINY), "long.wav", starts)
    lone = synthetic_piece(TINY, TINY.clip_seconds + 0.01, seed=12)
    lone_clips, lone_starts = cut_clips(lone, TINY, TINY.clip_samples)
    writer.add("train", log_mel(lone_clips, TINY), "lone.wav", lone_starts)
    writer.commit()
    ds = MelDataset(tmp_path / "c", "train", random_shift=True)
    assert ds._next_gap.tolist() == [TINY.frames - 1, TINY.frames - 1, 0, 0]

    for shift in (0, 1, 7, 40, TINY.frames - 1):
        mel = ds.shifted_mel(0, shift)
        assert mel.shape == (TINY.n_mels, TINY.frames)
        reference = log_mel(wave[shift * TINY.hop_length :][: TINY.clip_samples], TINY)
        # Frames within a window of a clip edge see reflect padding instead of the neighbouring audio.
        junction = TINY.frames - 1 - shift
        interior = [f for f in range(2, TINY.frames - 2) if abs(f - junction) > 2]
        np.testing.assert_allclose(mel[:, interior], reference[:, interior], atol=1e-5)
    with pytest.raises(ValueError):
        ds.shifted_mel(0, TINY.frames)
    with pytest.raises(ValueError):
        ds.shifted_mel(2, 1)

    torch.manual_seed(0)
    seen = set()
    for _ in range(10):
        mel = ds.mel(1)
        seen.add(next(s for s in range(TINY.frames) if np.array_equal(mel, ds.shifted_mel(1, s))))
    assert len(seen) > 3
    # The last clip of a source and a lone clip have no neighbour: never shifted.
    np.testing.assert_array_equal(ds.mel(3), np.asarray(ds.clips[3]))
    np.testing.assert_array_equal(ds.mel(2), np.asarray(ds.clips[2]))
