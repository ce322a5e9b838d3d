"""The check every refused command gets: exit code 2, exactly one `error: …` line, said last, no traceback, no terminal
escapes (the project's rule for bad input)."""

from __future__ import annotations

from typing import Any

EXIT_USER_ERROR = 2


def error_line(result: Any, *fragments: str, code: int = EXIT_USER_ERROR) -> str:
    """The single `error: …` line of a refused command run by typer's CliRunner, after checking the rule; each of
    `fragments` must be in it."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    # One error line, and it is the last thing said (a long command may have announced itself first).
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), result.output
    assert "\x1b" not in errors[0], "an error line must never carry terminal escape sequences"
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
