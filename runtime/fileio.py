"""Writing files without ever losing one: the one atomic writer, stale-temp cleanup, and the ledger of what pdd wrote.

- `AtomicFile` (and `atomic_write_bytes/text`, `write_json_atomic` on top of it) is the only way pdd writes a result: a
  temp file made with mkstemp (O_EXCL: a symlink planted at the temp name is never followed) in the target's folder, then
  fsync and os.replace, so a reader or a crash sees the old file or the new one, never half of one. Audio, JSON,
  checkpoints, cache shards and plots all go through it. Files come out 0644 (mkstemp's 0600 would hide results).
- Temp names carry our pid (`.NAME.pdd-PID.XXXX.tmp`); a process killed by SIGKILL or a plain SIGTERM leaves its temp
  behind, and `remove_stale_temps` deletes those of dead processes the next time a command uses that folder.
- A folder a command claims (`claim_output_folder`) gets a ledger, `.pdd-owned.json`: every file the atomic writer
  puts below it is recorded with its inode, size and mtime. `--force` deletes only files the ledger vouches for and that
  are unchanged since; anything else in the folder — a user's notes, a file that only looks like ours, the checkpoint
  being exported — makes it refuse and name the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pdd.runtime.errors import AudioError, ConfigError, PddError
from pdd.runtime.untrusted import is_inside, printable

LEDGER_NAME = ".pdd-owned.json"
LEDGER_FORMAT = "pdd-owned/1"
LEDGER_SEARCH_DEPTH = 3  # run/previews/x.wav and eval/wavs/row/clip.wav are recorded in run/ and eval/
MAX_NAMED_FILES = 5  # foreign files named in a refusal
_TEMP_RE = re.compile(r"^\..+\.pdd-(\d+)\.[A-Za-z0-9_]+\.tmp$")

_OS_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EIO: "an input/output error (failing disk or lost network mount?)",
}


def os_reason(exc: OSError) -> str:
    """Why an OSError happened, in plain words ("the disk is full", "permission denied")."""
    return _OS_REASONS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """An OSError in plain words, naming the file where the OS did: "the disk is full (/data/run/log.jsonl)"."""
    where = f" ({printable(exc.filename)})" if getattr(exc, "filename", None) else ""
    return f"{os_reason(exc)}{where}"


# ---------------------------------------------------------------------------------------------------------------------
# The atomic writer


def temp_prefix(name: str) -> str:
    """Prefix of our temp files for target `name`; the pid lets a later run tell a dead writer's leftovers from live ones."""
    return f".{name}.pdd-{os.getpid()}."


class AtomicFile:
    """A binary file written under a temp name and renamed onto `path` by `commit()`; `abort()` removes it.

    As a context manager it commits when the block ends normally and aborts on any exception. `overwrite=False`
    refuses an existing target, checked again at the rename (a hard link, which fails if the name was taken meanwhile).
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = True, mode: int = 0o644,
                 error: type[PddError] = AudioError) -> None:
        self.path = Path(path)
        self.overwrite, self.mode, self.error = overwrite, mode, error
        if not overwrite and os.path.lexists(self.path):
            raise error(f"{printable(self.path)} already exists; pass --overwrite to replace it")
        if not self.path.parent.is_dir():
            raise error(f"cannot write {printable(self.path)}: folder {printable(self.path.parent)} does not exist")
        try:
            fd, name = tempfile.mkstemp(prefix=temp_prefix(self.path.name), suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise error(f"cannot write {printable(self.path)}: {describe_os_error(exc)}") from None
        self.temp = Path(name)
        self.handle = os.fdopen(fd, "wb")

    def write(self, data: bytes | memoryview) -> int:
        return self.handle.write(data)

    def commit(self) -> Path:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.chmod(self.temp, self.mode)
            self._install()
        except OSError as exc:
            self.abort()
            raise self.error(f"cannot write {printable(self.path)}: {describe_os_error(exc)}; nothing was changed") from None
        note_written(self.path)
        return self.path

    def _install(self) -> None:
        if self.overwrite:
            os.replace(self.temp, self.path)
            return
        try:
            os.link(self.temp, self.path)  # atomic "create if absent": never replaces a file that appeared meanwhile
        except FileExistsError:
            self.abort()
            raise self.error(f"{printable(self.path)} already exists; pass --overwrite to replace it") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(self.path):
                self.abort()
                raise self.error(f"{printable(self.path)} already exists; pass --overwrite to replace it") from None
            os.replace(self.temp, self.path)
            return
        self.temp.unlink()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver them: a short write (a checkpoint, a JSON file) finishes
    whole instead of being torn inside a library (torch.save's zip writer fails with its own traceback when interrupted).
    Only the main thread can own signal handlers; elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, _frame: received.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, mode: int = 0o644,
                       error: type[PddError] = AudioError) -> Path:
    """Write `data` to `path` atomically; an existing file is refused unless `overwrite` (a one-line error)."""
    with deferred_interrupts():
        target = AtomicFile(path, overwrite=overwrite, mode=mode, error=error)
        try:
            target.write(data)
        except OSError as exc:
            target.abort()
            raise error(f"cannot write {printable(path)}: {describe_os_error(exc)}; nothing was changed") from None
        except BaseException:
            target.abort()
            raise
        return target.commit()


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, overwrite: bool = True, indent: int = 2, sort_keys: bool = True
) -> Path:
    """JSON with a trailing newline, written atomically (keys sorted unless their order carries meaning)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n", overwrite=overwrite)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line to a log (never through a symlink) and keep the folder's ledger in step with the file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
    note_written(path)


def ensure_writable_dir(path: str | os.PathLike[str], error: type[PddError] = PddError) -> Path:
    """Create `path` if needed and prove it takes a file now, before any long work; else `error` with the OS's reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("write-probe"), suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"cannot write to {printable(path)}: {describe_os_error(exc)}") from None
    return path


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete our temp files and folders (`.NAME.pdd-PID.XXXX.tmp`) whose writer process is gone; returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match or _process_alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            elif entry.is_file(follow_symlinks=False):
                path.unlink()
            else:
                continue
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process, or a pid no process can have
    return True


# ---------------------------------------------------------------------------------------------------------------------
# The ledger of files pdd wrote


def _ledger_root(path: Path) -> Path | None:
    """The nearest folder at most LEDGER_SEARCH_DEPTH levels above `path` that holds a ledger (a real file)."""
    folder = path.parent
    for _ in range(LEDGER_SEARCH_DEPTH):
        ledger = folder / LEDGER_NAME
        if ledger.is_file() and not ledger.is_symlink():
            return folder
        if folder.parent == folder:
            return None
        folder = folder.parent
    return None


def _read_ledger(root: Path) -> dict[str, list[int]]:
    """The ledger's entries; a missing, foreign or corrupt ledger (it is untrusted) vouches for nothing."""
    try:
        data = json.loads((root / LEDGER_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == LEDGER_FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {name: stamp for name, stamp in files.items()
            if isinstance(name, str) and isinstance(stamp, list) and len(stamp) == 3
            and all(isinstance(v, int) for v in stamp)}


def _write_ledger(root: Path, files: dict[str, list[int]]) -> None:
    """Rewrite the ledger atomically (no fsync: losing an entry in a crash only makes --force refuse, never delete)."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(LEDGER_NAME), suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": LEDGER_FORMAT, "files": files}, handle, indent=0, sort_keys=True)
        os.chmod(name, 0o644)
        os.replace(name, root / LEDGER_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _stamp(path: Path) -> list[int]:
    info = path.lstat()
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def note_written(path: str | os.PathLike[str]) -> None:
    """Record `path` in the ledger of the claimed folder above it, if any (best effort: a failure only means a later
    --force refuses to delete this file)."""
    path = Path(path)
    if path.name == LEDGER_NAME:
        return
    root = _ledger_root(path)
    if root is None:
        return
    with contextlib.suppress(OSError, ValueError):
        files = _read_ledger(root)
        files[path.relative_to(root).as_posix()] = _stamp(path)
        _write_ledger(root, files)


def _vouched_for(root: Path, ledger: dict[str, list[int]], path: Path) -> bool:
    """Whether the ledger recorded `path` (inside `root`, not a symlink) and it is unchanged since."""
    try:
        name = path.relative_to(root).as_posix()
        return name in ledger and not path.is_symlink() and is_inside(root, path) and _stamp(path) == ledger[name]
    except (OSError, ValueError):
        return False


def files_below(root: Path) -> Iterator[Path]:
    """Every non-folder entry below `root` (symlinks included, never followed), ours aside: ledger and live temps."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(folder, d))):
            if name == LEDGER_NAME and folder == str(root):
                continue
            yield Path(folder) / name


def claim_output_folder(out: Path, *, force: bool, own_files: Callable[[Path], Iterable[Path]], hint: str) -> None:
    """Make `out` this command's folder: refuse one that holds files unless `force`; with `force` delete only the files
    `own_files(out)` names that the ledger shows this pdd wrote and that are unchanged since. Any other file there makes
    it refuse, naming it, so nothing a user keeps there (or the input of this very command) is ever deleted. `hint` says
    how to proceed. Leaves a fresh ledger in `out`, so the files the run writes next are recorded."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{printable(out)} exists and is not a folder")
    if out.is_dir():
        remove_stale_temps(out)
        if next(files_below(out), None) is not None:
            if not force:
                raise ConfigError(f"{printable(out)} already holds files; {hint}")
            _delete_own_files(out, own_files)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_ledger(out, {})
    except OSError as exc:
        raise ConfigError(f"cannot use {printable(out)}: {describe_os_error(exc)}") from None


def _delete_own_files(out: Path, own_files: Callable[[Path], Iterable[Path]]) -> None:
    """Delete what `claim_output_folder` may delete, after checking that nothing else is there (nothing is deleted
    when something foreign is found; the walk stops once enough foreign files are known to name them)."""
    ledger = _read_ledger(out)
    candidates = {Path(p) for p in own_files(out)}
    ours: list[Path] = []
    foreign: list[Path] = []
    for path in files_below(out):
        if path in candidates and _vouched_for(out, ledger, path):
            ours.append(path)
        else:
            foreign.append(path)
            if len(foreign) > MAX_NAMED_FILES:
                break
    if foreign:
        shown = ", ".join(printable(p.relative_to(out).as_posix(), 120) for p in foreign[:MAX_NAMED_FILES])
        more = " and more" if len(foreign) > MAX_NAMED_FILES else ""
        raise ConfigError(
            f"{printable(out)} holds files this command did not write ({shown}{more}); --force removes only its own "
            "files: move those away or choose another --out"
        )
    for path in ours:
        path.unlink(missing_ok=True)


__all__ = [
    "AtomicFile", "LEDGER_NAME", "append_line", "atomic_write_bytes", "atomic_write_text", "claim_output_folder",
    "deferred_interrupts", "describe_os_error", "os_reason", "ensure_writable_dir", "files_below", "note_written", "remove_stale_temps",
    "write_json_atomic",
]
