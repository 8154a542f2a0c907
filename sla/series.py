"""Per-minute aggregates of the last 24 hours, for the SLA page's charts and its figures.

The observer adds every decision to the minute its stream entry was written in (the entry
id is Redis' clock, the same for a live read and a re-read). Nothing is written to Redis:
the SLA service's Redis user may not write keys of its own (ops/redis_acl.py). A restart
instead rebuilds the decisions of the last day from the decisions stream (XRANGE up to the
group's last delivered entry; the stream keeps days), so the charts are not blank after it.
Dead-letter depth is sampled by the running service only (its user may read the dead-letter
stream's length, not its entries): after a restart the earlier minutes have no sample.

Overdue signups over time need no sampling: a decided signup was overdue from
`accepted_at + SLA_OVERDUE_AFTER_S` until its decision was written, and a signup still
awaiting its decision is overdue from then until now.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from onboarding.decision import DecisionEvent
from onboarding.streams import live_entries, payload, text

logger = logging.getLogger(__name__)

OUTCOMES = ("approve", "review", "decline")
DAY_S = 24 * 3600
KEEP_S = DAY_S + 3600
# The two ranges the page plots: (name, span, bucket width).
RANGES = (("1h", 3600, 60), ("24h", DAY_S, 600))


def entry_time(entry_id: str) -> float:
    """Unix seconds of a stream entry id (`<ms>-<seq>`)."""
    return int(entry_id.split("-", 1)[0]) / 1000


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Minute:
    latencies: array = field(default_factory=lambda: array("d"))
    outcomes: dict[str, int] = field(default_factory=dict)
    decisions: int = 0
    failures: int = 0
    dead_letters: int | None = None  # the largest depth sampled in the minute


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


class Series:
    """What the page plots, minute by minute, for the last `KEEP_S` seconds (thread-safe)."""

    def __init__(self, overdue_after_s: float) -> None:
        self.overdue_after_s = overdue_after_s
        self.rebuilt_through: str | None = None  # entries up to this id came from `rebuild`
        self._minutes: dict[int, Minute] = {}
        self._overdue: list[tuple[float, float]] = []  # (overdue since, decided at) of decided signups
        self._lock = threading.Lock()
        self._trimmed_at = 0

    def add(self, at: float, event: DecisionEvent, entry_id: str | None = None) -> None:
        """One decision, written to the stream at `at`. An entry the rebuild already counted is skipped."""
        if entry_id is not None and self.rebuilt_through is not None:
            if _id_key(entry_id) <= _id_key(self.rebuilt_through):
                return
        latency = event.latency_s("accepted_at", "published_at")
        accepted = event.timestamps.get("accepted_at")
        with self._lock:
            minute = self._minutes.setdefault(int(at // 60), Minute())
            minute.decisions += 1
            minute.outcomes[event.decision] = minute.outcomes.get(event.decision, 0) + 1
            if event.error:
                minute.failures += 1
            if latency is not None:
                minute.latencies.append(max(0.0, latency))
            if accepted is not None:
                since = datetime.fromisoformat(accepted).timestamp() + self.overdue_after_s
                if since < at:
                    self._overdue.append((since, at))
            self._trim(at)

    def sample_dead_letters(self, at: float, depth: int) -> None:
        with self._lock:
            minute = self._minutes.setdefault(int(at // 60), Minute())
            minute.dead_letters = depth if minute.dead_letters is None else max(minute.dead_letters, depth)

    def rebuild(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        now: float,
        batch: int = 1000,
        progress: Callable[[], None] = lambda: None,
    ) -> int:
        """Re-read the decisions of the last `KEEP_S` the group has been given; returns how many.
        `progress` is called after each batch (the liveness probe's heartbeat)."""
        through = _last_delivered(client, stream, group)
        if through is None:
            return 0
        found: list[tuple[float, DecisionEvent]] = []
        start = f"{int((now - KEEP_S) * 1000)}-0"
        while True:
            entries = live_entries(client.xrange(stream, min=start, max=through, count=batch))
            for entry_id, fields in entries:
                try:
                    found.append((entry_time(entry_id), DecisionEvent.from_dict(json.loads(payload(fields)))))
                except (TypeError, ValueError, KeyError):
                    continue
            progress()
            if len(entries) < batch:
                break
            start = f"({entries[-1][0]}"
        for at, event in found:  # all or nothing: a failed read leaves nothing half counted
            self.add(at, event)
        self.rebuilt_through = through
        return len(found)

    def minutes(self, start: float, end: float) -> list[Minute]:
        with self._lock:
            return [m for key, m in self._minutes.items() if start <= key * 60 < end]

    def chart(self, now: float, span_s: int, step_s: int, awaiting_overdue: Iterable[float] = ()) -> dict[str, Any]:
        """The buckets of one range, oldest first, the last one holding `now`: one list per
        plotted quantity, aligned with `t` (bucket starts, Unix seconds). Rates are per minute;
        `None` where nothing was seen (no latency measured, no dead-letter sample)."""
        end = (int(now) // step_s + 1) * step_s
        start = end - span_s
        starts = list(range(start, end, step_s))
        with self._lock:
            buckets: list[list[Minute]] = [[] for _ in starts]
            for key, minute in self._minutes.items():
                if start <= key * 60 < end:
                    buckets[(key * 60 - start) // step_s].append(minute)
            spans = [*self._overdue, *((since, now) for since in awaiting_overdue if since < now)]
        per_min = step_s / 60
        out: dict[str, Any] = {
            "step_s": step_s,
            "start": start,
            "end": end,
            "t": starts,
            "p50_s": [],
            "p99_s": [],
            **{outcome: [] for outcome in OUTCOMES},
            "decisions": [],
            "dead_letters": [],
            "overdue": [],
        }
        for bucket_start, minutes in zip(starts, buckets, strict=True):
            latencies = [value for m in minutes for value in m.latencies]
            for name, q in (("p50_s", 50), ("p99_s", 99)):
                value = percentile(latencies, q)
                out[name].append(None if value is None else round(value, 3))
            for outcome in OUTCOMES:
                count = sum(m.outcomes.get(outcome, 0) for m in minutes)
                out[outcome].append(round(count / per_min, 2))
            out["decisions"].append(sum(m.decisions for m in minutes))
            sampled = [m.dead_letters for m in minutes if m.dead_letters is not None]
            out["dead_letters"].append(max(sampled) if sampled else None)
            bucket_end = bucket_start + step_s
            out["overdue"].append(sum(1 for since, until in spans if since < bucket_end and until > bucket_start))
        return out

    def _trim(self, now: float) -> None:
        oldest = int((now - KEEP_S) // 60)
        if oldest == self._trimmed_at:
            return
        self._trimmed_at = oldest
        for key in [key for key in self._minutes if key < oldest]:
            del self._minutes[key]
        if self._overdue and self._overdue[0][1] < now - KEEP_S:
            self._overdue = [span for span in self._overdue if span[1] >= now - KEEP_S]


def _last_delivered(client: redis.Redis, stream: str, group: str) -> str | None:
    try:
        rows = client.xinfo_groups(stream)
    except redis.exceptions.NoPermissionError:
        raise
    except redis.ResponseError:  # no stream yet
        return None
    for row in rows:
        values = {text(k): v for k, v in row.items()}
        if text(values.get("name", b"")) == group:
            last = values.get("last-delivered-id")
            return None if last is None else text(last)
    return None
