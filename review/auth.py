"""Who may use the review page: the reviewers file, signed session cookies and CSRF tokens.

The reviewers file is JSON, {name: "pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>"},
written by `onboarding-review add-reviewer`. A password is checked with PBKDF2-SHA256 and a
constant-time comparison; an unknown name costs the same hash, so timing tells no names.

A session is stateless: the cookie carries the reviewer's name and its expiry, signed with
HMAC-SHA256 under the session secret (nothing to store; a changed secret logs everybody
out). The CSRF token of a form is an HMAC of the session cookie under the same secret, so
another site cannot forge a form post without reading the reviewer's own page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from onboarding.errors import ConfigError

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 300_000
MIN_ITERATIONS = 200_000
SESSION_COOKIE = "review_session"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse(entry: str) -> tuple[int, bytes, bytes]:
    algorithm, iterations, salt, digest = entry.split("$")
    if algorithm != ALGORITHM:
        raise ValueError(f"algorithm {algorithm!r} is not {ALGORITHM}")
    count = int(iterations)
    if count < MIN_ITERATIONS:
        raise ValueError(f"{count} iterations; at least {MIN_ITERATIONS}")
    return count, _unb64(salt), _unb64(digest)


# Checked when the name is unknown, so that a miss costs as much as a hit.
_DUMMY = hash_password(secrets.token_urlsafe(16), salt=b"\0" * 16)


def verify_password(password: str, entry: str) -> bool:
    iterations, salt, expected = _parse(entry)
    actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(actual, expected)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(f"reviewer name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


class Reviewers:
    """The reviewers file, read again when it changes (a reviewer added or removed takes
    effect without a restart; a removed reviewer's sessions stop working)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}

    def entries(self) -> dict[str, str]:
        try:
            stat = self.path.stat()
        except OSError as err:
            raise ConfigError(f"REVIEW_USERS_FILE={str(self.path)!r} cannot be read: {err}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._entries = load_reviewers(self.path)
            self._stamp = stamp
        return self._entries

    def authenticate(self, name: str, password: str) -> bool:
        """True when `name` is a reviewer and `password` is theirs; constant time in both."""
        entry = self.entries().get(name)
        ok = verify_password(password, entry or _DUMMY)
        return ok and entry is not None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.entries()


def load_reviewers(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"REVIEW_USERS_FILE={str(path)!r} cannot be read: {err}") from None
    except ValueError as err:
        raise ConfigError(f"REVIEW_USERS_FILE={str(path)!r} is not JSON: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"REVIEW_USERS_FILE={str(path)!r} must be a JSON object of name: password hash")
    for name, entry in data.items():
        try:
            _parse(entry)
        except (ValueError, binascii.Error) as err:
            raise ConfigError(f"REVIEW_USERS_FILE={str(path)!r}: the entry of {name!r} is not usable: {err}") from None
    return data


def add_reviewer(path: Path, name: str, password: str) -> bool:
    """Add (or replace: returns False) a reviewer's password hash; the file is written whole
    and renamed into place, readable by its owner only."""
    check_name(name)
    if len(password) < 12:
        raise ConfigError("a reviewer's password needs at least 12 characters")
    entries = load_reviewers(path) if path.exists() else {}
    new = name not in entries
    entries[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return new


@dataclass(frozen=True)
class Session:
    reviewer: str
    expires: int
    cookie: str  # the signed value, which the CSRF token is derived from


class Sessions:
    """Issues and checks signed session cookies and the CSRF tokens derived from them."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self._key = hashlib.sha256(b"onboarding-review session\0" + secret.encode()).digest()
        self.ttl_s = ttl_s

    def _sign(self, value: str) -> str:
        return _b64(hmac.new(self._key, value.encode(), hashlib.sha256).digest())

    def issue(self, reviewer: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.ttl_s)
        value = f"{_b64(reviewer.encode())}.{expires}.{secrets.token_urlsafe(12)}"
        return f"{value}.{self._sign(value)}"

    def check(self, cookie: str, now: float | None = None) -> Session | None:
        """The session of a valid, unexpired cookie; None for anything else."""
        value, _, signature = cookie.rpartition(".")
        if not value or not hmac.compare_digest(signature.encode(), self._sign(value).encode()):
            return None
        try:
            name_b64, expires_text, _nonce = value.split(".")
            reviewer = _unb64(name_b64).decode()
            expires = int(expires_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if expires <= (now or time.time()):
            return None
        return Session(reviewer, expires, cookie)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf:{session.cookie}")

    def csrf_ok(self, session: Session, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def set_cookie(self, cookie: str) -> str:
        return f"{SESSION_COOKIE}={cookie}; Max-Age={self.ttl_s}; HttpOnly; SameSite=Strict; Path=/"

    @staticmethod
    def clear_cookie() -> str:
        return f"{SESSION_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"
