"""Signups accepted but not yet decided: the listener records them, the SLA observer clears them.

A sorted set `<signups stream>:awaiting` holds each accepted event id scored by its accept
time (Unix seconds), and a hash `<signups stream>:awaiting:conf` keeps the run conf the
listener sent, so an overdue signup can be re-triggered even if Airflow lost its run.
Recording is skipped when the decision is already out (its publish marker exists), in one
atomic step, so a duplicate delivery after the decision never shows up as overdue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from onboarding import keys
from onboarding.functions import fcall
from onboarding.settings import StreamSettings
from onboarding.streams import text


def awaiting_key(streams: StreamSettings) -> str:
    return keys.awaiting_key(streams.signups_stream)


def conf_key(streams: StreamSettings) -> str:
    return keys.awaiting_conf_key(streams.signups_stream)


@dataclass(frozen=True)
class Awaiting:
    """One accepted signup still waiting for its decision."""

    event_id: str
    accepted_ts: float


def record_accepted(
    client: redis.Redis, streams: StreamSettings, event_id: str, accepted_ts: float, conf: dict[str, Any]
) -> bool:
    """Remember an accepted signup until its decision is observed. False: already decided."""
    names = (awaiting_key(streams), conf_key(streams), keys.marker_key(streams.decisions_stream, event_id))
    payload = json.dumps(conf, separators=(",", ":"))
    # The `record_accepted` Redis Function (onboarding/functions/onboarding.lua).
    return bool(fcall(client, "record_accepted", names, [event_id, accepted_ts, payload]))


def clear_awaiting(client: redis.Redis, streams: StreamSettings, *event_ids: str) -> None:
    if not event_ids:
        return
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(awaiting_key(streams), *event_ids)
        pipe.hdel(conf_key(streams), *event_ids)
        pipe.execute()


def expire_awaiting(client: redis.Redis, streams: StreamSettings, before_ts: float) -> list[str]:
    """Forget signups accepted before `before_ts` whose decision was never observed (the zset
    member and the run conf, which holds the application). Their decision, if any, has left
    the decisions stream by then, so nothing would ever clear them; returns the event ids."""
    stale = [item.event_id for item in awaiting_before(client, streams, before_ts)]
    for start in range(0, len(stale), 500):
        clear_awaiting(client, streams, *stale[start : start + 500])
    return stale


def awaiting_before(client: redis.Redis, streams: StreamSettings, cutoff_ts: float) -> list[Awaiting]:
    """Accepted signups, oldest first, accepted at or before `cutoff_ts` and not yet decided."""
    # With WITHSCORES the reply is (member, score) pairs; redis-py's type also covers the call without.
    rows = cast(
        "list[tuple[bytes | str, float]]",
        client.zrangebyscore(awaiting_key(streams), "-inf", cutoff_ts, withscores=True),
    )
    return [Awaiting(text(member), float(score)) for member, score in rows]


def awaiting_count(client: redis.Redis, streams: StreamSettings) -> int:
    return int(client.zcard(awaiting_key(streams)))


def accepted_conf(client: redis.Redis, streams: StreamSettings, event_id: str) -> dict[str, Any] | None:
    raw = client.hget(conf_key(streams), event_id)
    return json.loads(raw) if raw else None
