"""runtime/untrusted.py: confinement, bounds, printable text, ONNX external-data discovery, npz header checks."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from pdd.runtime.errors import PddError
from pdd.runtime.untrusted import (
    bounded_float,
    bounded_int,
    check_audio_bounds,
    check_npz_sizes,
    onnx_external_locations,
    parse_json,
    printable,
    resolve_inside,
)


def test_resolve_inside_accepts_nested_names_and_refuses_every_way_out(tmp_path):
    root = tmp_path / "bundle"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.onnx").write_bytes(b"")
    assert resolve_inside(root, "sub/a.onnx", "graph") == (root / "sub" / "a.onnx").resolve()
    assert resolve_inside(root, "sub/../sub/a.onnx", "graph") == (root / "sub" / "a.onnx").resolve()
    (tmp_path / "outside").write_bytes(b"")
    (root / "link").symlink_to(tmp_path / "outside")
    (root / "loop").symlink_to(root / "loop")
    for name in ("../outside", "/etc/passwd", "link", "sub/../../outside", "~/x", "", "a\x00b", 7, None):
        with pytest.raises(PddError):
            resolve_inside(root, name, "graph")
    with pytest.raises(PddError, match="cannot be resolved|outside"):
        resolve_inside(root, "loop", "graph")


def test_printable_escapes_controls_bidi_and_undecodable_bytes():
    assert printable("ok name") == "ok name"
    assert printable("\x1b[2J\x07") == "\\x1b[2J\\x07"
    assert printable("a\u202eb") == "a\\u202eb"
    assert printable("caf\udce9") == "caf\\xe9"  # a non-UTF-8 byte of a file name (surrogateescape)
    assert printable("x" * 1000, 10) == "x" * 9 + "…"
    assert "\n" not in printable("two\nlines")


def test_bounds_refuse_wrong_types_and_out_of_range_values():
    assert bounded_int(5, "n", 1, 10) == 5
    for value in (0, 11, True, 5.0, "5", None):
        with pytest.raises(PddError, match=r"n must be an integer in \[1, 10\]"):
            bounded_int(value, "n", 1, 10)
    assert bounded_float(0.5, "m", 0, 1) == 0.5
    for value in (float("nan"), float("inf"), -0.1, "0.5"):
        with pytest.raises(PddError):
            bounded_float(value, "m", 0, 1)
    check_audio_bounds({"sample_rate": 22050, "frames": 384, "hop_length": 512}, "audio")
    for bad in ({"sample_rate": 10**12}, {"n_mels": float("nan")}, {"frames": 16384, "hop_length": 32768}, "paper"):
        with pytest.raises(PddError):
            check_audio_bounds(bad, "audio")


def test_parse_json_turns_every_failure_into_one_error():
    assert parse_json(b'{"a": 1}', "x") == {"a": 1}
    for raw in (b"{", b'"\xff"', b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(PddError):
            parse_json(raw, "x")


def _entry(location: bytes) -> bytes:
    return b"\x0a\x08location\x12" + bytes([len(location)]) + location


def test_onnx_external_locations_finds_every_entry_and_refuses_other_layouts():
    raw = b"junk" + _entry(b"weights.data") + b"more" + _entry(b"../evil") + _entry(b"weights.data")
    assert onnx_external_locations(raw) == ["weights.data", "../evil"]
    assert onnx_external_locations(b"no external data at all") == []
    with pytest.raises(ValueError, match="layout"):
        onnx_external_locations(b"\x0a\x08location\x1a\x03abc")
    with pytest.raises(ValueError, match="truncated"):
        onnx_external_locations(b"\x0a\x08location\x12\x7fshort")


def test_npz_headers_are_checked_before_numpy_allocates(tmp_path):
    fine = tmp_path / "fine.npz"
    np.savez(fine, a=np.zeros((2, 3), np.float32))
    check_npz_sizes(fine, 100)
    with pytest.raises(ValueError, match="over 5 elements"):
        check_npz_sizes(fine, 5)
    pickled = tmp_path / "pickled.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(pickled, "w") as archive:
        archive.writestr("a.npy", buffer.getvalue())
    with pytest.raises(ValueError, match="Python objects"):
        check_npz_sizes(pickled, 100)
