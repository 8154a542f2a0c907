"""The service's Redis Functions: one library (onboarding/functions/onboarding.lua), loaded at
deploy time by the administrator, called by the components with FCALL.

No component role holds EVAL (a role with EVAL can run any script, one that blocks Redis
included): each atomic step of the service is a named function of this library, loaded by
`onboarding-redis-acl apply` (or `load-functions`) as the administrator, and by the test and
local-stack fixtures with their admin connection at start. A component whose server lacks
the library fails with `FunctionsNotLoaded`, which says how to load it.

Loading is idempotent and safe with concurrent loaders: the library is replaced only when
the server's copy is missing, of an older version, or of the same version with other code,
with FUNCTION LOAD REPLACE of the same name and code (two loaders of one release agree, and
Redis runs each load atomically). A newer library on the server is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline

from onboarding.errors import OnboardingError

LIBRARY = "onboarding"
LIBRARY_FILE = Path(__file__).parent / "functions" / "onboarding.lua"
# The functions the components call (and the version probe).
FUNCTIONS = (
    "publish_decision",
    "record_accepted",
    "answer_refusal",
    "review_claim",
    "review_release",
    "review_decide",
    "replay_dead_letter",
    "onboarding_version",
)
NOT_LOADED = (
    "the onboarding Redis functions are not loaded: run onboarding-redis-acl apply "
    "(or onboarding-redis-acl load-functions) as the Redis administrator"
)
_VERSION = re.compile(r"^local LIBRARY_VERSION = (\d+)$", re.MULTILINE)


class FunctionsNotLoaded(OnboardingError):
    """The server has no `onboarding` function library (or not this function)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{NOT_LOADED}{f' ({detail})' if detail else ''}")


@cache
def library_code() -> str:
    return LIBRARY_FILE.read_text(encoding="utf-8")


def code_version(code: str) -> int:
    match = _VERSION.search(code)
    if match is None:
        raise ValueError("the library has no `local LIBRARY_VERSION = <n>` line")
    return int(match.group(1))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def installed_code(client: redis.Redis, library: str = LIBRARY) -> str | None:
    """The code of the server's `library`, or None when it has none."""
    reply = client.execute_command("FUNCTION", "LIST", "LIBRARYNAME", library, "WITHCODE")
    for entry in reply or []:
        # RESP2: a flat list of alternating names and values.
        fields = dict(zip(map(_text, entry[::2]), entry[1::2], strict=True)) if isinstance(entry, list) else entry
        fields = {_text(k): v for k, v in fields.items()}
        if _text(fields.get("library_name", "")) == library:
            return _text(fields["library_code"])
    return None


def ensure_loaded(client: redis.Redis, code: str | None = None) -> bool:
    """Load the library unless the server has this version (or a newer one) already.
    Needs FUNCTION LIST and FUNCTION LOAD: an administrator's connection, never a
    component's. Returns True when this call loaded it."""
    code = code if code is not None else library_code()
    ours = code_version(code)
    current = installed_code(client)
    if current is not None:
        try:
            theirs = code_version(current)
        except ValueError:
            theirs = -1
        if theirs > ours or (theirs == ours and current == code):
            return False
    client.execute_command("FUNCTION", "LOAD", "REPLACE", code)
    return True


def not_loaded(exc: BaseException) -> bool:
    """Whether a Redis error says the function (or its library) is missing."""
    return isinstance(exc, redis.ResponseError) and "function not found" in str(exc).lower()


def fcall(client: redis.Redis | Pipeline, name: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """FCALL one of the library's functions. On a pipeline the call is queued (inside MULTI
    too) and a missing library surfaces at `execute()` (see `not_loaded`)."""
    if isinstance(client, Pipeline):
        return client.fcall(name, len(keys), *keys, *args)
    try:
        return client.fcall(name, len(keys), *keys, *args)
    except redis.ResponseError as exc:
        if not_loaded(exc):
            raise FunctionsNotLoaded(name) from exc
        raise
