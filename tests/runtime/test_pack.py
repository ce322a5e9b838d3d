"""Snake packing: the exact layout (docs/architecture.md, "Audio front end") and an exact inverse for every shape
that divides."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdd.runtime.errors import ConfigError
from pdd.runtime.pack import pack, snake_time_index, unpack


def test_layout_matches_design():
    frames, chunks = 12, 3
    mel = np.tile(np.arange(frames), (2, 1))  # every mel bin holds its frame number
    packed = pack(mel, chunks)
    assert packed.shape == (6, 4)
    # position p: chunk 0 holds p, chunk 1 holds 2L-1-p, chunk 2 holds 2L+p (L = 4)
    assert packed[0].tolist() == [0, 1, 2, 3]
    assert packed[2].tolist() == [7, 6, 5, 4]
    assert packed[4].tolist() == [8, 9, 10, 11]
    # bins stay grouped per chunk: rows 0..F-1 are chunk 0
    assert packed[1].tolist() == packed[0].tolist()


def test_chunk_boundaries_are_neighbours():
    index = snake_time_index(384, 3)
    # at the end of chunk 0 (p = L-1) chunk 1 holds the next frame in time
    assert index[1, -1] == index[0, -1] + 1
    assert index[2, 0] == index[1, 0] + 1


def test_one_chunk_is_identity():
    mel = np.random.default_rng(0).normal(size=(5, 7))
    assert np.array_equal(pack(mel, 1), mel)


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), max_size=2),
    n_mels=st.integers(1, 6),
    length=st.integers(1, 9),
    chunks=st.integers(1, 5),
)
def test_unpack_inverts_pack(lead, n_mels, length, chunks):
    shape = (*lead, n_mels, length * chunks)
    mel = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    packed = pack(mel, chunks)
    assert packed.shape == (*lead, chunks * n_mels, length)
    assert np.array_equal(unpack(packed, chunks), mel)


def test_shapes_that_do_not_divide_are_refused():
    with pytest.raises(ConfigError, match="multiple"):
        pack(np.zeros((4, 10)), 3)
    with pytest.raises(ConfigError):
        unpack(np.zeros((10, 4)), 3)
