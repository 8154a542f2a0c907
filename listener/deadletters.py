"""Dead-letter tooling: list, inspect and replay rejected signups.

A dead letter holds `reason`, `detail`, `original_id`, `dead_at`, the consumer, and the
original entry's fields as `original.<field>`. Replaying appends those original fields to
the signups stream as a new entry (so it is validated again) and removes the dead letter,
in one atomic Redis Function: a replayed event is never in both places, nor in neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.typing import StreamRangeResponse

from onboarding.functions import fcall
from onboarding.untrusted import field_of

ORIGINAL_PREFIX = "original."
TRUNCATED_PREFIX = "truncated."


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    reason: str
    detail: str
    original_id: str
    dead_at: str
    original: dict[str, bytes]
    cut: dict[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str | None:
        value = field_of(self.original.get("payload"), "event_id")
        return value if isinstance(value, str) else None

    @property
    def truncated(self) -> bool:
        """The listener cut an oversize field: there is nothing whole to replay."""
        return bool(self.cut)

    def to_dict(self, with_payload: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.entry_id,
            "reason": self.reason,
            "detail": self.detail,
            "event_id": self.event_id,
            "original_id": self.original_id,
            "dead_at": self.dead_at,
        }
        if self.cut:
            out["truncated"] = self.cut
        if with_payload:
            out["original"] = {k: v.decode("utf-8", errors="replace") for k, v in self.original.items()}
        return out


def _entries(reply: StreamRangeResponse | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    # redis-py's type covers clients made with decode_responses (ours never are: a replay
    # must send the original bytes back) and the field-less entries only XREADGROUP and
    # XCLAIM return; an XRANGE entry always has an id and fields.
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", reply or [])


def _decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    text = {k.decode(): v for k, v in fields.items()}

    def get(name: str) -> str:
        return text.get(name, b"").decode("utf-8", errors="replace")

    return DeadLetter(
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        reason=get("reason"),
        detail=get("detail"),
        original_id=get("original_id"),
        dead_at=get("dead_at"),
        original={k.removeprefix(ORIGINAL_PREFIX): v for k, v in text.items() if k.startswith(ORIGINAL_PREFIX)},
        cut={
            k.removeprefix(TRUNCATED_PREFIX): v.decode("utf-8", errors="replace")
            for k, v in text.items()
            if k.startswith(TRUNCATED_PREFIX)
        },
    )


def list_dead_letters(
    client: redis.Redis, stream: str, reason: str | None = None, count: int | None = None
) -> list[DeadLetter]:
    letters = [_decode(eid, fields) for eid, fields in _entries(client.xrange(stream))]
    if reason:
        letters = [d for d in letters if d.reason == reason]
    return letters[-count:] if count else letters


def get_dead_letter(client: redis.Redis, stream: str, entry_id: str) -> DeadLetter | None:
    entries = _entries(client.xrange(stream, min=entry_id, max=entry_id))
    return _decode(*entries[0]) if entries else None


def replay(
    client: redis.Redis, dead_stream: str, signups_stream: str, letters: list[DeadLetter]
) -> list[tuple[DeadLetter, str | None]]:
    """Send each dead letter's original fields back to the signups stream.

    Returns each letter with its new signups entry id, or None if it was not replayed
    (already replayed by someone else, or nothing to replay)."""
    out: list[tuple[DeadLetter, str | None]] = []
    for letter in letters:
        if not letter.original or letter.truncated:
            out.append((letter, None))
            continue
        flat = [part for field, value in letter.original.items() for part in (field, value)]
        # The `replay_dead_letter` Redis Function: XDEL, then XADD only if this call deleted it.
        new_id = fcall(client, "replay_dead_letter", [dead_stream, signups_stream], [letter.entry_id, *flat])
        out.append((letter, (new_id.decode() if isinstance(new_id, bytes) else str(new_id)) if new_id else None))
    return out
