"""The four checks every hostile case makes: exit code 2, one `error:` line, no traceback, unchanged sha256 of every file
the command does not own. (A plain module: tests/hostile/conftest.py puts this folder on sys.path.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

from typer.testing import CliRunner



def invoke(app: Any, *args: object) -> Any:
    return CliRunner().invoke(app, [a if isinstance(a, (str, bytes)) else str(a) for a in args])


def error_line(result: Any, code: int = 2) -> str:
    """The single `error: …` line of a refused command (exit `code`, no traceback, the error said last)."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    # One error line, and it is the last thing said (a long command may have announced itself first).
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), result.output
    assert "\x1b" not in errors[0], "an error line must never carry terminal escape sequences"
    return errors[0]


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file below `root` (symlinks recorded by their target text, never followed)."""
    digests: dict[str, str] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            key = os.fsencode(path.relative_to(root)).decode("utf-8", "backslashreplace")
            if path.is_symlink():
                digests[key] = "link:" + os.readlink(path)
            elif path.is_file():
                digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


class Guard:
    """Snapshot of a tree; `unchanged(owned=...)` asserts that every file outside `owned` prefixes is as it was."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.before = sha256_tree(root)

    def unchanged(self, owned: Iterable[str] = ()) -> None:
        owned = tuple(owned)
        mine = lambda name: any(name == o or name.startswith(o.rstrip("/") + "/") for o in owned)  # noqa: E731
        after = {k: v for k, v in sha256_tree(self.root).items() if not mine(k)}
        before = {k: v for k, v in self.before.items() if not mine(k)}
        assert after == before
