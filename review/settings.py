"""The reviewers' tools' settings, read once from the environment (docs/review.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onboarding import keys
from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.logs import LOG_FORMATS
from onboarding.settings import StreamSettings

# A session secret shorter than this is guessable enough to forge sessions with.
MIN_SECRET_CHARS = 32

# (variable, what it sets): what `onboarding-review --help` lists.
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("REDIS_URL", "Redis holding the review queue (redis://127.0.0.1:6379/0); the `reviewer` ACL user"),
    ("DECISIONS_STREAM", "the decisions stream whose cases are reviewed (decisions)"),
    ("REVIEW_DEADLINE_S", "seconds from a case's opening to its deadline (86400); the publish step sets it"),
    ("APP_FEED_MAXLEN", "entries an app's decision feed keeps, about (100000); as the publish step"),
    ("REVIEW_HOST", "address the page listens on (127.0.0.1)"),
    ("REVIEW_PORT", "port of the page (9116)"),
    ("REVIEW_USERS_FILE", "JSON file of reviewers and their password hashes (add-reviewer writes it)"),
    ("REVIEW_SESSION_SECRET", "key that signs session cookies, at least 32 characters (serve)"),
    ("REVIEW_SESSION_SECRET_FILE", "... or a file holding it"),
    ("REVIEW_SESSION_TTL_S", "how long a login lasts (28800)"),
    ("LOG_FORMAT", "json or text (json)"),
)


@dataclass(frozen=True)
class ReviewSettings:
    """Everything `onboarding-review` and its page need."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    deadline_s: float = float(keys.REVIEW_DEADLINE_S)
    host: str = "127.0.0.1"
    port: int = 9116
    users_file: Path | None = None
    session_secret: str | None = field(default=None, repr=False)
    session_ttl_s: int = 8 * 3600
    log_format: str = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReviewSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        log_format = env.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS)
        secret = env.secret("REVIEW_SESSION_SECRET")
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"REVIEW_SESSION_SECRET has {len(secret)} characters; use at least {MIN_SECRET_CHARS} "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        users = env.optional_str("REVIEW_USERS_FILE")
        return cls(
            streams=StreamSettings.from_env(source),
            deadline_s=env.float("REVIEW_DEADLINE_S", cls.deadline_s, minimum=60),
            host=env.str("REVIEW_HOST", cls.host),
            port=env.int("REVIEW_PORT", cls.port, minimum=0),
            users_file=Path(users).expanduser() if users else None,
            session_secret=secret,
            session_ttl_s=env.int("REVIEW_SESSION_TTL_S", cls.session_ttl_s, minimum=60),
            log_format=log_format,
        )

    def require_users_file(self) -> Path:
        if self.users_file is None:
            raise ConfigError("REVIEW_USERS_FILE is not set: it names the reviewers' password file (add-reviewer)")
        return self.users_file

    def require_session_secret(self) -> str:
        if self.session_secret is None:
            raise ConfigError(
                "REVIEW_SESSION_SECRET (or REVIEW_SESSION_SECRET_FILE) is not set: the page signs its "
                "session cookies with it"
            )
        return self.session_secret
