"""Redis stream helpers shared by the stream's consumers (listener, SLA observer)."""

from __future__ import annotations

import redis


def ensure_group(client: redis.Redis, stream: str, group: str, start: str) -> bool:
    """Create the consumer group (and the stream) unless it exists; True if it was created.

    `start` is where a new group begins: "0" for everything in the stream, "$" for what
    arrives from now on. An existing group keeps its position.
    """
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
        return False
    return True
