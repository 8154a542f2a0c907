"""What every component shares: where the streams live and where the service keeps its data."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.keys import APP_FEED_MAXLEN


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
    # The product apps with their own Redis user and intake stream (ONBOARDING_APPS=web,mobile;
    # docs/security.md, per-app isolation): each submits to `<signups>:app:<name>` and reads
    # only `<decisions>:event:<name>:*`; the intake process (intake/) forwards the intakes into the signups.
    apps: tuple[str, ...] = ()
    # The most entries an app's decision feed `<decisions>:app:<name>` keeps (APP_FEED_MAXLEN;
    # XADD MAXLEN ~ by the publish step and a reviewer's final decision): a bound on memory, the
    # intake process also trims the feeds by age (DECISIONS_RETENTION_S).
    app_feed_maxlen: int = APP_FEED_MAXLEN
    # The feature contract the whole service runs with (ONBOARDING_DATASET): the signup
    # schema, training data, model and reasons (risk.datasets; docs/model.md).
    dataset: str = "german_credit"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamSettings:
        env = Env(os.environ if environ is None else environ)
        return cls(
            redis_url=env.str("REDIS_URL", cls.redis_url),
            signups_stream=env.str("SIGNUPS_STREAM", cls.signups_stream),
            decisions_stream=env.str("DECISIONS_STREAM", cls.decisions_stream),
            dead_letter_stream=env.str("DEAD_LETTER_STREAM", cls.dead_letter_stream),
            apps=parse_apps(env.str("ONBOARDING_APPS", "")),
            app_feed_maxlen=env.int("APP_FEED_MAXLEN", cls.app_feed_maxlen, minimum=1),
            dataset=parse_dataset(env.str("ONBOARDING_DATASET", cls.dataset)),
        )


# The data sets the service can run with (ONBOARDING_DATASET); German credit is the default.
DATASETS = ("german_credit", "credit_data")
DEFAULT_DATASET = "german_credit"


def parse_dataset(value: str) -> str:
    """ONBOARDING_DATASET: one of `DATASETS`."""
    name = value.strip() or DEFAULT_DATASET
    if name not in DATASETS:
        raise ConfigError(f"ONBOARDING_DATASET={value!r} is not a known data set; known: {', '.join(DATASETS)}")
    return name


# An app's name: part of its Redis user, key prefixes and event ids, so no glob or separator.
APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def parse_apps(value: str) -> tuple[str, ...]:
    """ONBOARDING_APPS: comma-separated app names (lower-case letters, digits, `-`; at most 32)."""
    apps = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    bad = [name for name in apps if not APP_NAME.fullmatch(name)]
    if bad:
        raise ConfigError(f"ONBOARDING_APPS: {', '.join(map(repr, bad))} must match {APP_NAME.pattern}")
    return apps
