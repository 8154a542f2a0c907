"""Per-app intake: each app submits to its own stream, the intake process forwards it (atomically).

An app's Redis user (`app-<name>`, ops/redis_acl.py) may XADD only to its own intake stream
`<signups>:app:<name>` and read only its own decisions (`<decisions>:event:<name>:*`, keys
and channels). Whatever it does to its intake (MAXLEN 0, an id at the top of the id space,
floods) hurts its own signups only: the shared signups stream is written by the forwarder.

The forwarder is the `forward_intake` Redis Function (onboarding/functions/intake.lua, its
own library `onboarding_intake`, loaded at deploy time by the administrator like the
`onboarding` library), FCALLed by the intake process (`onboarding-intake`, intake/, its own
Redis user `intake`) for each configured app: one call reads a
bounded batch through the intake's consumer group, appends each entry to the signups stream
with `app=<name>` and acknowledges it on the intake, all in one atomic step, so an entry is
forwarded exactly once whatever dies when. The listener then gives the signup the event id
`<name>:<event id>` (keys.app_event_id): one app cannot squat another's ids, and the
decision is published under the app's prefix, where only that app may read it. A call that
drains the intake empties it (XTRIM MAXLEN 0, in the same atomic step): a signup stays in
its intake only until it is forwarded.

Why the app cannot simply FCALL a function that appends to `signups`: Redis 7 checks every
command a function runs against the calling user's ACL (tests/unit/test_app_isolation.py
proves it), so a function never runs with more rights than its caller.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import redis

from onboarding import keys
from onboarding.functions import FunctionsNotLoaded, code_version, installed_code, not_loaded
from onboarding.streams import ensure_group

LIBRARY = "onboarding_intake"
LIBRARY_FILE = Path(__file__).parent / "functions" / "intake.lua"
# The most fields an intake entry may have (a signup has one: payload).
MAX_FIELDS = 16
# The intake group's one consumer (onboarding/functions/intake.lua reads as it): the intake
# process's blocking wait reads as it too, so what the wait returns is forwarded first.
FORWARDER_CONSUMER = "forwarder"
# Field names and the stream entry's overhead on top of the payload limit.
FIELD_SLACK_BYTES = 1024


@cache
def library_code() -> str:
    return LIBRARY_FILE.read_text(encoding="utf-8")


def ensure_loaded(client: redis.Redis) -> bool:
    """Load the intake library unless the server has this version (or a newer one): an
    administrator's connection (FUNCTION LIST, FUNCTION LOAD). True when this call loaded it."""
    code = library_code()
    current = installed_code(client, LIBRARY)
    if current is not None:
        try:
            theirs = code_version(current)
        except ValueError:
            theirs = -1
        if theirs > code_version(code) or (theirs == code_version(code) and current == code):
            return False
    client.execute_command("FUNCTION", "LOAD", "REPLACE", code)
    return True


def ensure_intake_group(client: redis.Redis, signups_stream: str, app: str) -> None:
    """The forwarder's group on an app's intake (and the stream), from its start."""
    ensure_group(client, keys.intake_stream(signups_stream, app), keys.INTAKE_GROUP, start="0")


def forward(client: redis.Redis, signups_stream: str, app: str, count: int, max_payload_bytes: int) -> int:
    """Forward up to `count` of `app`'s intake entries into the signups stream (one atomic
    FCALL). Returns how many were appended. Creates the intake's group when it is missing
    (first start, or an operator deleted a broken intake stream)."""
    intake = keys.intake_stream(signups_stream, app)
    args = (keys.INTAKE_GROUP, app, count, max_payload_bytes + FIELD_SLACK_BYTES, MAX_FIELDS)
    for attempt in (1, 2):
        try:
            return int(client.fcall("forward_intake", 2, intake, signups_stream, *args))
        except redis.ResponseError as exc:
            if not_loaded(exc):
                raise FunctionsNotLoaded(f"{LIBRARY}.forward_intake") from exc
            if "NOGROUP" not in str(exc) or attempt == 2:
                raise
            ensure_intake_group(client, signups_stream, app)
    raise AssertionError("unreachable")
