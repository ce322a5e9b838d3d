"""Pack orders for the ablations (runtime/pack.py): "reshape" (chunks stacked as they are) beside "snake", and C = 1
("--pack none"); the audio preset and the bundle manifest carry the order, and snake presets serialise as before."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdd.runtime.bundle import _check_audio, pack_entry
from pdd.runtime.config import AudioConfig, get_preset
from pdd.runtime.errors import BundleError, ConfigError
from pdd.runtime.pack import pack, pack_time_index, snake_time_index, unpack, unpack_index

PAPER_KEYS = ["name", "sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax", "frames", "top_db",
              "pack_chunks"]


def test_reshape_layout_stacks_chunks_without_reversing() -> None:
    mel = np.tile(np.arange(12), (2, 1))  # every mel bin holds its frame number
    packed = pack(mel, 3, "reshape")
    assert packed[0].tolist() == [0, 1, 2, 3]
    assert packed[2].tolist() == [4, 5, 6, 7]  # snake would hold [7, 6, 5, 4]
    assert packed[4].tolist() == [8, 9, 10, 11]
    assert pack(mel, 3, "snake")[2].tolist() == [7, 6, 5, 4]
    assert pack_time_index(12, 3, "reshape").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert np.array_equal(snake_time_index(384, 3), pack_time_index(384, 3, "snake"))


def test_one_chunk_is_the_identity_in_both_orders() -> None:
    mel = np.random.default_rng(0).standard_normal((5, 8))
    for order in ("snake", "reshape"):
        assert np.array_equal(pack(mel, 1, order), mel) and np.array_equal(unpack(mel, 1, order), mel)


@settings(max_examples=40, deadline=None)
@given(chunks=st.integers(1, 6), length=st.integers(1, 9), mels=st.integers(1, 5), order=st.sampled_from(["snake", "reshape"]))
def test_unpack_inverts_pack_in_each_order(chunks: int, length: int, mels: int, order: str) -> None:
    mel = np.random.default_rng(chunks * 100 + length).standard_normal((2, mels, chunks * length)).astype(np.float32)
    assert np.array_equal(unpack(pack(mel, chunks, order), chunks, order), mel)
    flat = pack_time_index(chunks * length, chunks, order).reshape(-1)
    assert np.array_equal(flat[unpack_index(chunks * length, chunks, order)], np.arange(chunks * length))


def test_unknown_order_is_refused() -> None:
    with pytest.raises(ConfigError, match="pack order"):
        pack(np.zeros((2, 6)), 3, "zigzag")
    with pytest.raises(ConfigError, match="pack_order"):
        AudioConfig(pack_order="zigzag")


def test_snake_presets_serialise_exactly_as_before_and_variants_round_trip() -> None:
    paper = get_preset("paper")
    assert list(paper.to_dict()) == PAPER_KEYS  # no pack_order key: older readers and files stay byte-identical
    assert AudioConfig.from_dict(paper.to_dict()) == paper
    reshape = paper.with_pack_mode("reshape")
    assert reshape.to_dict()["pack_order"] == "reshape" and AudioConfig.from_dict(reshape.to_dict()) == reshape
    none = paper.with_pack_mode("none")
    assert none.packed_shape == (128, 384) and none.pack_mode == "none"
    assert (paper.pack_mode, reshape.pack_mode, reshape.packed_shape) == ("snake", "reshape", (384, 128))
    assert paper.with_pack_mode("snake") == paper
    assert paper.same_front_end(none) and paper.same_front_end(reshape) and not paper.same_front_end(get_preset("tiny"))
    with pytest.raises(ConfigError, match="pack mode"):
        paper.with_pack_mode("zigzag")


def test_manifest_pack_entry_records_the_order_and_must_agree() -> None:
    paper, reshape = get_preset("paper"), get_preset("paper").with_pack_mode("reshape")
    assert pack_entry(paper) == {"chunks": 3}  # as every bundle before the order existed
    assert pack_entry(reshape) == {"chunks": 3, "order": "reshape"}
    assert pack_entry(paper.with_pack_mode("none")) == {"chunks": 1}
    where = Path("engine")
    assert _check_audio({"audio": reshape.to_dict(), "pack": pack_entry(reshape)}, where) == reshape
    assert _check_audio({"audio": paper.to_dict(), "pack": {"chunks": 3}}, where) == paper
    with pytest.raises(BundleError, match="pack.order 'snake' disagrees"):
        _check_audio({"audio": reshape.to_dict(), "pack": {"chunks": 3, "order": "snake"}}, where)
    with pytest.raises(BundleError, match="pack.order 'reshape' disagrees"):
        _check_audio({"audio": paper.to_dict(), "pack": {"chunks": 3, "order": "reshape"}}, where)
