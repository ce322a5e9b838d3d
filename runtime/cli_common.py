"""Shared plumbing for the typer commands: one-line errors with a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from pdd.runtime.errors import PddError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def make_app(help_text: str) -> typer.Typer:
    """A typer app with our conventions: no shell-completion noise, no rich tracebacks."""
    return typer.Typer(
        help=help_text,
        add_completion=False,
        pretty_exceptions_enable=False,
        no_args_is_help=False,
        rich_markup_mode="rich",
    )


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise. Messages quote untrusted text (bundle names, file
    names, manifest values), so control characters are escaped: one line, and nothing that drives the terminal."""
    from pdd.runtime.untrusted import printable

    print(f"error: {printable(message, 2000)}", file=sys.stderr)
    return typer.Exit(code)


def _escape_unencodable_output() -> None:
    """A file name with non-UTF-8 bytes (an --out from a foreign file system) prints as \\xNN instead of raising
    UnicodeEncodeError in the middle of a summary line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def user_errors(func: F) -> F:
    """Decorator for command bodies: PddError (and a few OS errors a user causes) → one line on stderr, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _escape_unencodable_output()
        try:
            return func(*args, **kwargs)
        except PddError as exc:
            raise fail(str(exc)) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise fail(f"{exc.strerror or exc}{where}") from None
        except OSError as exc:  # disk full, permission denied, read-only, I/O error: in plain words
            from pdd.runtime.fileio import describe_os_error

            raise fail(describe_os_error(exc)) from None
        except MemoryError:
            raise fail("out of memory; use fewer clips per call (--batch-size) or a smaller input") from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
