"""Redis stream helpers shared by the stream's consumers (listener, SLA observer)."""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.typing import StreamRangeResponse, XReadGroupResponse, XReadResponse

Fields = dict[bytes | str, bytes | str]
"""A stream entry's fields as redis-py returns them: bytes (str on a `decode_responses` client)."""

Entry = tuple[str, Fields]


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


def text(value: bytes | str) -> str:
    """A Redis reply as text. Bytes that are not UTF-8 (a producer may send anything) become
    U+FFFD instead of raising: a bad entry must be dead-lettered or reported, not crash a loop."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def live_entries(reply: StreamRangeResponse | None) -> list[Entry]:
    """The (id, fields) entries of an XRANGE, XREVRANGE or XCLAIM reply, or of one stream of an
    XREAD, ids as text. An entry deleted while pending comes back (from XREADGROUP and XCLAIM)
    without fields: it is left out here, and `deleted_ids()` names it."""
    return [(text(eid), fields) for eid, fields in reply or [] if eid is not None and fields is not None]


def payload(fields: Fields) -> bytes | str:
    """An entry's `payload` field. A TypeError (what `json.loads(None)` raises) if it has none."""
    raw = fields.get(b"payload") or fields.get("payload")
    if raw is None:
        raise TypeError("the stream entry has no 'payload' field")
    return raw


def deleted_ids(reply: StreamRangeResponse) -> list[str]:
    """The ids of the entries of a reply that were deleted while pending (they have no fields)."""
    return [text(eid) for eid, fields in reply if eid is not None and fields is None]


def xread_entries(reply: XReadResponse | XReadGroupResponse) -> StreamRangeResponse:
    """The entries of an XREAD or XREADGROUP reply on one stream; none (an empty list) on a timeout."""
    if not reply:
        return []
    # redis-py types the reply for both protocols; it has the RESP2 shape, [[stream, entries]],
    # unless the client was made with protocol=3, and ours never are.
    return cast("list[list[Any]]", reply)[0][1]
