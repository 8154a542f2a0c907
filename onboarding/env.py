"""Typed reads of environment variables, with errors that name the key and the bad value.

Only `from_env()` constructors call these; code below them takes a settings object.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from pathlib import Path

from onboarding.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """A view of an environment mapping (os.environ by default) with typed getters."""

    # The getters are named for the types they return, so below `def str` an annotation
    # `str` would mean the method: the signatures spell out `builtins.`.

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def str(self, key: str, default: str) -> str:
        value = self._environ.get(key, "").strip()
        return value or default

    def optional_str(self, key: builtins.str) -> builtins.str | None:
        value = self._environ.get(key, "").strip()
        return value or None

    def int(self, key: builtins.str, default: builtins.int, minimum: builtins.int | None = None) -> builtins.int:
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

    def float(
        self, key: builtins.str, default: builtins.float, minimum: builtins.float | None = None
    ) -> builtins.float:
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

    def choice(self, key: builtins.str, default: builtins.str, choices: Sequence[builtins.str]) -> builtins.str:
        """One of `choices` (`LOG_FORMAT`: json or text)."""
        value = self.str(key, default)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} must be {' or '.join(choices)}")
        return value

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._environ.get(key, "").strip().lower()
        if not raw:
            return default
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{key}={raw!r} is not a boolean (use true or false)")

    def secret(self, key: builtins.str) -> builtins.str | None:
        """A secret from `KEY`, or else from the file named by `KEY_FILE` (a mounted Kubernetes
        Secret, or a file the local stack writes); None when neither is set."""
        value = self.optional_str(key)
        if value is not None:
            return value
        path = self.optional_str(f"{key}_FILE")
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError as err:
            raise ConfigError(f"{key}_FILE={path!r} cannot be read: {err}") from None

    def path(self, key: builtins.str, default: Path) -> Path:
        raw = self._environ.get(key, "").strip()
        return Path(raw).expanduser() if raw else default


def switch(key: str, environ: Mapping[str, str] | None = None, default: bool = True) -> bool:
    """A boolean setting that turns an adjustment on or off, read from `environ` (default:
    the process environment); a value that is not a boolean raises ConfigError naming it."""
    import os

    return Env(os.environ if environ is None else environ).bool(key, default)
