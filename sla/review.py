"""The review queue's SLA: its depth, overdue cases and oldest case, for Prometheus and the page.

Read at scrape time, cheaply: the queue (a sorted set) is scored by each case's deadline, so

- depth is ZCARD, overdue cases are ZCOUNT -inf..now (a deadline already passed);
- the oldest case is the queue's first member (deadline = opened + REVIEW_DEADLINE_S as set
  at publish): one HGET of its opening time gives its age and its deadline's length;
- open/claimed needs the state of each case (one pipelined HGET per case): done up to
  `STATE_SCAN_LIMIT` cases; above that only the total is exported, as `state="total"`.

Decided cases leave the queue (review/store.py), so a decided case is never overdue.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onboarding import keys
from onboarding.streams import text

logger = logging.getLogger(__name__)

STATE_SCAN_LIMIT = 10_000
PAGE_OVERDUE_LIMIT = 50


@dataclass(frozen=True)
class QueueFigures:
    """What a scrape reads: depth (by state when counted), overdue count, the oldest case."""

    depth: int
    open: int | None  # None: more than STATE_SCAN_LIMIT cases, states not counted
    claimed: int | None
    overdue: int
    oldest_age_s: float  # 0 when the queue is empty
    deadline_s: float | None  # the oldest case's deadline length (None when empty)


def _opened_epoch(raw: Any) -> float | None:
    try:
        return datetime.fromisoformat(text(raw)).timestamp() if raw else None
    except ValueError:
        return None


def queue_figures(client: redis.Redis, decisions_stream: str, now: float | None = None) -> QueueFigures:
    now = time.time() if now is None else now
    queue = keys.review_queue_key(decisions_stream)
    depth = int(client.zcard(queue))
    overdue = int(client.zcount(queue, "-inf", f"({now}"))
    first = cast("list[tuple[bytes, float]]", client.zrange(queue, 0, 0, withscores=True))
    oldest_age_s, deadline_s = 0.0, None
    if first:
        case_id, deadline = text(first[0][0]), float(first[0][1])
        opened = _opened_epoch(client.hget(keys.review_case_key(decisions_stream, case_id), "opened_at"))
        if opened is not None:
            oldest_age_s, deadline_s = max(0.0, now - opened), deadline - opened
    open_, claimed = None, None
    if depth <= STATE_SCAN_LIMIT:
        members = [text(m) for m in cast("list[bytes]", client.zrange(queue, 0, -1))]
        with client.pipeline(transaction=False) as pipe:
            for case_id in members:
                pipe.hget(keys.review_case_key(decisions_stream, case_id), "state")
            states = [text(s) if s else "" for s in pipe.execute()]
        claimed = states.count("claimed")
        open_ = len(states) - claimed
    return QueueFigures(depth, open_, claimed, overdue, oldest_age_s, deadline_s)


class ReviewQueueCollector(Collector):
    """onboarding_review_* gauges, read from Redis at each scrape."""

    def __init__(self, client: redis.Redis, decisions_stream: str = keys.DECISIONS_STREAM) -> None:
        self.client = client
        self.stream = decisions_stream

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "onboarding_review_queue_depth",
            "Review cases not decided yet, by state (open, claimed; `total` above the state-count limit).",
            labels=["state"],
        )
        overdue = GaugeMetricFamily("onboarding_review_overdue_cases", "Undecided review cases past their deadline.")
        oldest = GaugeMetricFamily(
            "onboarding_review_oldest_case_age_seconds", "Age of the oldest undecided review case (0 when none)."
        )
        deadline = GaugeMetricFamily(
            "onboarding_review_case_deadline_seconds",
            "Deadline length of the oldest undecided case (REVIEW_DEADLINE_S at its opening); absent when none.",
        )
        try:
            figures = queue_figures(self.client, self.stream)
        except redis.RedisError as err:  # StreamCollector reports Redis as down; stay quiet here
            logger.warning("sla: redis failed reading the review queue: %s", err)
            return
        if figures.open is None or figures.claimed is None:
            depth.add_metric(["total"], float(figures.depth))
        else:
            depth.add_metric(["open"], float(figures.open))
            depth.add_metric(["claimed"], float(figures.claimed))
        overdue.add_metric([], float(figures.overdue))
        oldest.add_metric([], figures.oldest_age_s)
        if figures.deadline_s is not None:
            deadline.add_metric([], figures.deadline_s)
        yield from (depth, overdue, oldest, deadline)


# -- the SLA page's section ----------------------------------------------------------------


@dataclass(frozen=True)
class OverdueCase:
    case_id: str
    user_id: str
    deadline_at: str
    overdue_s: float
    assignee: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "user_id": self.user_id,
            "deadline_at": self.deadline_at,
            "overdue_s": round(self.overdue_s, 1),
            "assignee": self.assignee,
        }


@dataclass(frozen=True)
class ReviewQueueView:
    """The review queue on the SLA page: depth, claimed, overdue cases and the oldest age."""

    depth: int
    claimed: int | None
    overdue_count: int
    oldest_age_s: float
    overdue: tuple[OverdueCase, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "claimed": self.claimed,
            "overdue_count": self.overdue_count,
            "oldest_age_s": round(self.oldest_age_s, 1),
            "overdue": [case.to_dict() for case in self.overdue],
        }


def review_view(
    client: redis.Redis, decisions_stream: str, now: float | None = None, limit: int = PAGE_OVERDUE_LIMIT
) -> ReviewQueueView:
    """The page's figures and the overdue cases, earliest deadline first (at most `limit`)."""
    now = time.time() if now is None else now
    figures = queue_figures(client, decisions_stream, now)
    queue = keys.review_queue_key(decisions_stream)
    due = cast(
        "list[tuple[bytes, float]]",
        client.zrangebyscore(queue, "-inf", f"({now}", start=0, num=limit, withscores=True),
    )
    cases = []
    if due:
        with client.pipeline(transaction=False) as pipe:
            for member, _score in due:
                pipe.hgetall(keys.review_case_key(decisions_stream, text(member)))
            rows = pipe.execute()
        for (member, score), raw in zip(due, rows, strict=True):
            data = {text(k): text(v) for k, v in raw.items()}
            cases.append(
                OverdueCase(
                    case_id=text(member),
                    user_id=data.get("user_id", ""),
                    deadline_at=datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds"),
                    overdue_s=now - score,
                    assignee=data.get("assignee") or None,
                )
            )
    return ReviewQueueView(figures.depth, figures.claimed, figures.overdue, figures.oldest_age_s, tuple(cases))


def render_section(view: ReviewQueueView | None) -> str:
    """The page's "Review queue" section (HTML)."""
    e = html.escape
    if view is None:
        return '<h2>Review queue</h2>\n<div class="sub" id="review-queue">not read</div>'
    claimed = "n/a" if view.claimed is None else str(view.claimed)
    cards = (
        ("cases waiting", str(view.depth), "review-depth"),
        ("claimed by a reviewer", claimed, "review-claimed"),
        ("overdue cases", str(view.overdue_count), "review-overdue"),
        ("oldest case age", f"{view.oldest_age_s / 3600:.1f} h", "review-oldest"),
    )
    card_html = "\n".join(
        f'<div class="card"><div class="label">{e(label)}</div><div class="value" id="{key}">{e(value)}</div></div>'
        for label, value, key in cards
    )
    rows = (
        "\n".join(
            f"<tr><td>{e(c.case_id)}</td><td>{e(c.user_id)}</td><td>{e(c.deadline_at)}</td>"
            f"<td>{c.overdue_s / 3600:.1f} h</td><td>{e(c.assignee or 'unassigned')}</td></tr>"
            for c in view.overdue
        )
        or '<tr><td colspan="5">none</td></tr>'
    )
    return f"""<h2>Review queue</h2>
<div class="cards" id="review-queue">
{card_html}
</div>
<table id="review-overdue-cases">
<tr><th>case</th><th>user</th><th>deadline</th><th>overdue by</th><th>assignee</th></tr>
{rows}
</table>"""
