"""Typed reads of environment variables, with errors that name the key and the bad value.

Only `from_env()` constructors call these; code below them takes a settings object.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from onboarding.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """A view of an environment mapping (os.environ by default) with typed getters."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def str(self, key: str, default: str) -> str:
        value = self._environ.get(key, "").strip()
        return value or default

    def optional_str(self, key: str) -> str | None:
        value = self._environ.get(key, "").strip()
        return value or None

    def int(self, key: str, default: int, minimum: int | None = None) -> int:
        raw = self._environ.get(key, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}={raw!r} must be at least {minimum}")
        return value

    def float(self, key: str, default: float, minimum: float | None = None) -> float:
        raw = self._environ.get(key, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}={raw!r} must be at least {minimum}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        raw = self._environ.get(key, "").strip().lower()
        if not raw:
            return default
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{key}={raw!r} is not a boolean (use true or false)")

    def path(self, key: str, default: Path) -> Path:
        raw = self._environ.get(key, "").strip()
        return Path(raw).expanduser() if raw else default
