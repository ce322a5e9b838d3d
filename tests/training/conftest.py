"""Fixtures shared by the training tests."""

from __future__ import annotations

from typing import Any, Callable

import pytest




def _one_error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture()
def one_error_line() -> Callable[[Any], str]:
    """Check a CliRunner result is exactly one `error: …` line with exit code 2, and return that line."""
    return _one_error_line
