"""`JsonConfig`: the one JSON round trip for every dataclass config (audio presets, U-Net, training, distillation).

Unknown fields are refused with a message naming them, so a config from a newer or foreign tool never loads half-understood.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, TypeVar

from pdd.runtime.errors import ConfigError

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclasses: to_dict / to_json / from_dict / from_json. Tuples serialise as JSON lists."""

    config_kind: ClassVar[str] = "config"  # how error messages name this kind of config

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.config_kind} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown {cls.config_kind} fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.config_kind} is not valid JSON: {exc}") from None
        return cls.from_dict(data)
