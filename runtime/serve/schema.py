"""The body of POST /api/generate, checked: untrusted bytes in, a `GenerateRequest` or one `BadRequest` line out.

`{"seed": int?, "steps": int?, "vocoder": str?, "format": "wav"|"flac"?}`: a missing seed is drawn at random (and returned
in X-Pdd-Seed), missing steps/vocoder/format take the engine's defaults, as `pdd-run` does. Booleans are not integers
here (JSON `true` is not a seed), unknown fields are refused rather than ignored (a typo must not silently change nothing).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from pdd.runtime.errors import PddError

MAX_BODY_BYTES = 4096  # a valid body is < 100 bytes; anything near this is a mistake or an attack
MAX_SEED = 2**63 - 1  # numpy's Generator takes any non-negative int; this keeps seeds one int64 everywhere
RANDOM_SEED_LIMIT = 2**31  # drawn seeds stay exact in JavaScript numbers and easy to type back in
FIELDS = ("seed", "steps", "vocoder", "format")


class BadRequest(PddError):
    """A request the client must fix: answered with `status` and `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EngineChoices:
    """What this server's engine accepts, for checking requests and for the page's controls."""

    default_steps: int
    steps: tuple[int, ...]
    vocoders: tuple[str, ...]
    formats: tuple[str, ...]
    default_vocoder: str = "auto"
    default_format: str = "wav"


@dataclass(frozen=True)
class GenerateRequest:
    seed: int
    steps: int
    vocoder: str
    format: str
    seed_was_random: bool = False

    @property
    def settings_key(self) -> tuple[int, str]:
        """Requests with the same key can share one model call (the format only matters when encoding)."""
        return (self.steps, self.vocoder)


def parse_generate_request(body: bytes, choices: EngineChoices) -> GenerateRequest:
    """Check a POST /api/generate body against `choices`; BadRequest (400/413) says what is wrong."""
    data = _json_object(body)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the fields are: {', '.join(FIELDS)}")
    seed, random_seed = _seed(data.get("seed"))
    steps = _steps(data.get("steps"), choices)
    vocoder = _choice(data.get("vocoder"), "vocoder", choices.vocoders, choices.default_vocoder)
    fmt = _choice(data.get("format"), "format", choices.formats, choices.default_format)
    return GenerateRequest(seed=seed, steps=steps, vocoder=vocoder, format=fmt, seed_was_random=random_seed)


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes", status=413)
    if not body.strip():
        return {}  # an empty body means "all defaults, random seed"
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("body is not valid JSON; send an object like {\"seed\": 7}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object like {\"seed\": 7}")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seed(value: Any) -> tuple[int, bool]:
    if value is None:
        return secrets.randbelow(RANDOM_SEED_LIMIT), True
    if not _is_int(value):
        raise BadRequest(f"seed must be an integer, got {_json_type(value)}")
    if not 0 <= value <= MAX_SEED:
        raise BadRequest(f"seed must be in [0, {MAX_SEED}], got {value}")
    return value, False


def _steps(value: Any, choices: EngineChoices) -> int:
    if value is None:
        return choices.default_steps
    if not _is_int(value):
        raise BadRequest(f"steps must be an integer, got {_json_type(value)}")
    if value not in choices.steps:
        raise BadRequest(f"steps {_short(value)} is not offered by this engine; choose one of: {_listing(choices.steps)}")
    return value


def _choice(value: Any, field: str, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, got {_json_type(value)}")
    if value not in allowed:
        raise BadRequest(f"unknown {field} {_short(value)!r}; choose one of: {', '.join(allowed)}")
    return value


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), "null")


def _short(value: Any, limit: int = 40) -> Any:
    """Echo a client's value back without letting it fill the error line."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if _is_int(value) and len(str(value)) > limit:
        return str(value)[:limit] + "…"
    return value


def _listing(values: tuple[int, ...], limit: int = 12) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", … {values[-1]}" if len(values) > limit else "")
