"""What every component shares: where the streams live and where the service keeps its data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from onboarding.env import Env


def default_home(environ: Mapping[str, str]) -> Path:
    """The service's data home: ONBOARDING_HOME if set, else `var/` in the current directory.

    Never a path derived from where the code is installed: an installed wheel has no
    checkout around it. The default suits commands run from the checkout root (the
    scripts and the tests do); anywhere else, set ONBOARDING_HOME. The result is absolute,
    so it means the same to child processes started in another directory.
    """
    return Env(environ).path("ONBOARDING_HOME", Path("var")).absolute()


def redacted_url(url: str) -> str:
    """A connection URL fit for logs and messages: any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class StreamSettings:
    """Redis and the names of the three streams (see docs/configuration.md)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    signups_stream: str = "signups"
    decisions_stream: str = "decisions"
    dead_letter_stream: str = "signups:dead"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamSettings:
        env = Env(os.environ if environ is None else environ)
        return cls(
            redis_url=env.str("REDIS_URL", cls.redis_url),
            signups_stream=env.str("SIGNUPS_STREAM", cls.signups_stream),
            decisions_stream=env.str("DECISIONS_STREAM", cls.decisions_stream),
            dead_letter_stream=env.str("DEAD_LETTER_STREAM", cls.dead_letter_stream),
        )
