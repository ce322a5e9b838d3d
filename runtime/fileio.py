"""Atomic file writes: a temp file in the same folder, then os.replace, so a reader (or a crash) sees the old file or the
new one, never half of one. Files come out 0644 (mkstemp's 0600 would hide results from other users of the machine).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from pdd.runtime.errors import AudioError, ConfigError, PddError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically; an existing file is refused unless `overwrite` (a one-line error)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise AudioError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, overwrite: bool = True, indent: int = 2, sort_keys: bool = True
) -> Path:
    """JSON with a trailing newline, written atomically (keys sorted unless their order carries meaning)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n", overwrite=overwrite)


def ensure_writable_dir(path: str | os.PathLike[str], error: type[PddError] = PddError) -> Path:
    """Create `path` if needed and prove it takes a file now, before any long work; else `error` with the OS's reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".pdd-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise error(f"cannot write to {path}: {exc.strerror or exc}") from None
    return path


def claim_output_folder(out: Path, *, force: bool, own_files: Callable[[Path], Iterable[Path]], hint: str) -> None:
    """Refuse an output folder that already holds files unless `force`; with `force` delete only `own_files(out)`,
    the files this command writes, so nothing else a user keeps there is ever lost. `hint` says how to proceed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out} already holds files; {hint}")
        for path in own_files(out):
            path.unlink(missing_ok=True)
