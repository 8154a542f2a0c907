"""What every component shares: where the streams live and where the service keeps its data."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
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


# What `onboarding-stack up` records for operator commands run by hand (docs/operations.md).
STACK_ENV_FILE = "stack.env.json"


def use_stack_defaults(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Give an operator command run by hand the running local stack's settings: each variable
    the stack recorded in `<home>/stack.env.json` (its Redis, metadata databases, archive,
    Airflow URL and admin credential file) that is not set already. Returns the names taken.
    Nothing happens where no stack ran (Kubernetes, a bare checkout): the commands' own
    defaults and errors apply."""
    target = os.environ if environ is None else environ
    path = default_home(target) / STACK_ENV_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    taken = [key for key, value in recorded.items() if key not in target and isinstance(value, str)]
    for key in taken:
        target[key] = recorded[key]
    return taken


def stack_defaults_for(prog: str) -> None:
    """`use_stack_defaults` for an operator command, saying on stderr what it took."""
    import sys

    taken = use_stack_defaults()
    if taken:
        where = default_home(os.environ) / STACK_ENV_FILE
        print(f"{prog}: the local stack's settings ({where}): {', '.join(sorted(taken))}", file=sys.stderr)


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
