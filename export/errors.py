"""The export package's error type, in a module of its own so every export module can raise it without importing the
bundle writer (which imports them: a cycle)."""

from __future__ import annotations

from pdd.runtime.errors import PddError


class ExportError(PddError):
    """An export that cannot be done as asked, or whose graphs fail their parity check."""
