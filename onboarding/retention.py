"""Stream retention that can never drop work: trim below the oldest entry still needed.

An entry of `signups` may be removed only when every consumer group has both delivered and
acknowledged it, and it is older than the retention period. `safe_trim_id` computes that
bound from XINFO GROUPS (last delivered id) and XPENDING (oldest pending id); XTRIM MINID
then removes only entries strictly below it.

An app's decision feed (`<decisions>:app:<app>`) is trimmed by age alone (`trim_by_age`): its
only consumer groups are the app's own, and an app that stops reading must not keep its
applicants' decisions past the retention period.
"""

from __future__ import annotations

import time

import redis


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def safe_trim_id(client: redis.Redis, stream: str, retention_s: float, now_s: float | None = None) -> str:
    """The lowest id that must be kept: nothing below it is pending, undelivered or recent."""
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    bound = (max(0, now_ms - int(retention_s * 1000)), 0)
    for group in client.xinfo_groups(stream):
        name = group["name"]
        last = parse_id(group["last-delivered-id"])
        bound = min(bound, (last[0], last[1] + 1))  # everything after it is undelivered
        if group.get("pending", 0):
            summary = client.xpending(stream, name)
            if summary["min"] is not None:
                bound = min(bound, parse_id(summary["min"]))
    return format_id(bound)


def trim_stream(client: redis.Redis, stream: str, retention_s: float, now_s: float | None = None) -> int:
    """Remove entries older than the retention period that every consumer group has
    acknowledged (a stream without groups is trimmed by age alone). Returns how many."""
    if not client.exists(stream):
        return 0
    return int(client.xtrim(stream, minid=safe_trim_id(client, stream, retention_s, now_s), approximate=False))


def trim_by_age(client: redis.Redis, stream: str, retention_s: float, now_s: float | None = None) -> int:
    """Remove entries older than the retention period, whoever has read them. Returns how many."""
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    bound = format_id((max(0, now_ms - int(retention_s * 1000)), 0))
    return int(client.xtrim(stream, minid=bound, approximate=False))
