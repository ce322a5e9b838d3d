"""Reading files a stranger may have written: bundle manifests, cache indexes, golden files, output ledgers, audio headers.

The one home for three rules (docs/architecture.md, "Untrusted files"):

- every path such a file names is resolved inside the file's own folder, after symlinks, or refused (`resolve_inside`);
- every number it holds has an upper bound (`bounded_int`, `bounded_float`, `check_audio_bounds`), so a value of 1e9 or
  1e12 is refused before it becomes an allocation or a loop;
- every text from it that reaches a terminal is made printable first (`printable`): escape sequences in a bundle name
  must not repaint or retitle the user's terminal, and a non-UTF-8 file name must not crash `print`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pdd.runtime.errors import PddError

MAX_JSON_BYTES = 64 << 20  # a manifest or index this big is not ours (the largest real index is a few MB)
MAX_PRINTED_CHARS = 400

# C0 and C1 controls, DEL, and the Unicode bidi overrides/isolates (they reorder what a terminal shows).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

# Upper bounds for an audio preset read from a file: generous for any real preset (paper is 22050 Hz, n_fft 2048,
# 128 mels, 384 frames), small enough that one clip's buffers stay far below a gigabyte. Lower bounds and consistency
# are AudioConfig.validate's job.
AUDIO_BOUNDS: dict[str, float] = {
    "sample_rate": 384_000, "n_fft": 1 << 15, "win_length": 1 << 15, "hop_length": 1 << 15, "n_mels": 1024,
    "frames": 1 << 14, "pack_chunks": 64, "top_db": 400.0, "fmin": 192_000.0, "fmax": 192_000.0,
}
MAX_CLIP_SAMPLES = 1 << 24  # ≈ 6 min at 44.1 kHz per clip


def printable(value: Any, limit: int = MAX_PRINTED_CHARS) -> str:
    """`value` as text safe for a terminal: control, bidi and lone-surrogate characters escaped, long text cut."""
    text = value if isinstance(value, str) else str(value)
    text = _UNPRINTABLE.sub(_escape, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 in a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def resolve_inside(root: str | os.PathLike[str], name: Any, what: str, error: type[PddError] = PddError) -> Path:
    """`root/name` resolved (symlinks followed), refused unless it stays inside `root` (also resolved).

    `name` comes from an untrusted file: it must be a non-empty relative path string. `what` says where it came from
    ("manifest graphs.sampler.file") for the error message.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise error(f"{what} must name a file inside {printable(root)}, got {printable(repr(name))}")
    if os.path.isabs(name) or name.startswith("~"):
        raise error(f"{what} names {printable(name)}, outside {printable(root)}: only paths inside the folder are allowed")
    base = Path(root).resolve()
    try:
        target = (base / name).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise error(f"{what} {printable(name)} cannot be resolved ({exc.__class__.__name__})") from None
    if target != base and base not in target.parents:
        raise error(f"{what} names {printable(name)}, which leads outside {printable(root)}; refusing to read it")
    return target


def is_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether `path` (resolved) is `root` or below it (resolved)."""
    base, target = Path(root).resolve(), Path(path).resolve()
    return target == base or base in target.parents


def bounded_int(value: Any, what: str, low: int, high: int, error: type[PddError] = PddError) -> int:
    """`value` if it is an int (not a bool) in [low, high]; else `error` naming `what` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{what} must be an integer in [{low}, {high}], got {_shown(value)}")
    return value


def bounded_float(value: Any, what: str, low: float, high: float, error: type[PddError] = PddError) -> float:
    """`value` as a float if it is a finite number in [low, high]; else `error` naming `what` and the range."""
    number = _as_float(value)
    if number is None or not low <= number <= high:
        raise error(f"{what} must be a number in [{low:g}, {high:g}], got {_shown(value)}")
    return number


def _as_float(value: Any) -> float | None:
    """`value` as a float if it is a JSON number that fits one (not a bool, not a 400-digit integer); else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _shown(value: Any) -> str:
    """A value for an error message: repr cut short, and never the 4,300-digit limit of int → str."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return "an integer of over 70 digits"
    return printable(repr(value), 60)


def check_audio_bounds(audio: Any, what: str, error: type[PddError] = PddError) -> None:
    """Refuse an audio preset dict with a size over any sane bound (before anything is allocated from it)."""
    if not isinstance(audio, dict):
        raise error(f"{what} must be an object, got {type(audio).__name__}")
    for key, high in AUDIO_BOUNDS.items():
        value = audio.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value <= high:  # NaN fails too
            raise error(f"{what}.{key} is {_shown(value)}, over the limit of {high:g}")
    frames, hop = audio.get("frames"), audio.get("hop_length")
    if isinstance(frames, int) and isinstance(hop, int) and frames * hop > MAX_CLIP_SAMPLES:
        raise error(f"{what}: a clip of {frames} frames × {hop} samples is over the limit of {MAX_CLIP_SAMPLES} samples")


# An ONNX TensorProto names its external data file in a StringStringEntryProto {key: "location", value: PATH}: field 1
# (tag 0x0a) holding the 8 bytes "location", then field 2 (tag 0x12) holding the path as a varint-prefixed string.
_ONNX_LOCATION_KEY = b"\x0a\x08location"


def onnx_external_locations(model: bytes) -> list[str]:
    """Every external-data location an ONNX file names, found in its raw protobuf bytes (no onnx package needed), at
    any nesting depth (initializers, Constant nodes, subgraphs). A "location" key not followed by its value — another
    field order than onnx writes — is refused rather than guessed at. Raises ValueError for an entry it cannot read."""
    locations: list[str] = []
    start = model.find(_ONNX_LOCATION_KEY)
    while start >= 0:
        pos = start + len(_ONNX_LOCATION_KEY)
        if pos >= len(model) or model[pos] != 0x12:
            raise ValueError("an external-data entry in an unexpected layout")
        length, pos = _varint(model, pos + 1)
        if pos + length > len(model):
            raise ValueError("a truncated external-data entry")
        locations.append(model[pos : pos + length].decode("utf-8", errors="surrogateescape"))
        start = model.find(_ONNX_LOCATION_KEY, pos + length)
    return list(dict.fromkeys(locations))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("a malformed length in an external-data entry")


def check_npz_sizes(path: str | os.PathLike[str], max_elements: int) -> None:
    """Read only the array headers of an .npz and refuse object arrays or any array over `max_elements`, before numpy
    allocates it (a header may claim any shape). Raises ValueError with the reason."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                else:
                    raise ValueError(f"{printable(member)}: .npy format {version} is not one numpy writes for plain arrays")
            if dtype.hasobject:
                raise ValueError(f"{printable(member)} holds Python objects")
            if int(np.prod(shape, dtype=np.float64)) > max_elements:
                raise ValueError(f"{printable(member)} claims shape {shape}, over {max_elements} elements")


def load_json(path: str | os.PathLike[str], what: str, error: type[PddError] = PddError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file that may be hostile: size-capped, and invalid UTF-8 or absurd nesting is a one-line `error`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{printable(path)}: {what} is {size} bytes, over the limit of {max_bytes}; not a pdd file")
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {printable(path)}: {exc.strerror or exc}") from None
    return parse_json(raw, f"{what} {printable(path)}", error)


def parse_json(raw: bytes | str, what: str, error: type[PddError] = PddError) -> Any:
    """json.loads with every failure (bad syntax, bad UTF-8, nesting deep enough to exhaust the stack) as `error`."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({printable(exc, 120)})") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to be a pdd file") from None


__all__ = [
    "AUDIO_BOUNDS", "MAX_JSON_BYTES", "bounded_float", "bounded_int", "check_audio_bounds", "check_npz_sizes", "is_inside", "load_json",
    "onnx_external_locations", "parse_json", "printable", "resolve_inside",
]
