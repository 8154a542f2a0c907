"""The review queue's SLA against a real Redis: what the metrics and the SLA page show of
the queue's depth, its overdue cases and its oldest case, read as the `sla` ACL user."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client import CollectorRegistry

from onboarding.decision import DecisionEvent, publish_decision, utc_now
from review import ReviewQueue
from sla.review import ReviewQueueCollector, queue_figures, render_section, review_view
from tests.unit.test_redis_acl import acl_users  # noqa: F401 (the fixture)

STREAM = "decisions"


def review(event_id: str, user_id: str) -> DecisionEvent:
    return DecisionEvent(event_id, user_id, "review", 0.42, [], "v1", f"signup__{event_id}", {"occurred_at": utc_now()})


def _queue(client: redis.Redis) -> None:
    """Two cases already past a tiny deadline (one claimed by alice), one due in a day, one decided."""
    publish_decision(client, STREAM, review("evt-late-1", "user-1"), review_deadline_s=0.05)
    publish_decision(client, STREAM, review("evt-late-2", "user-2"), review_deadline_s=0.05)
    publish_decision(client, STREAM, review("evt-fresh", "user-3"))
    publish_decision(client, STREAM, review("evt-done", "user-4"), review_deadline_s=0.05)
    queue = ReviewQueue(client, STREAM)
    queue.claim("evt-late-2", "alice")
    queue.decide("evt-done", "bob", "approve", "documents checked")
    time.sleep(0.1)


def test_the_collector_counts_overdue_cases_depth_by_state_and_the_oldest_age(
    redis_client: redis.Redis,
    acl_users: Callable[[str], redis.Redis],  # noqa: F811 (the fixture imported above)
) -> None:
    _queue(redis_client)
    registry = CollectorRegistry()
    registry.register(ReviewQueueCollector(acl_users("sla"), STREAM))
    value = registry.get_sample_value
    assert value("onboarding_review_queue_depth", {"state": "open"}) == 2
    assert value("onboarding_review_queue_depth", {"state": "claimed"}) == 1
    assert value("onboarding_review_overdue_cases") == 2  # a decided case is never overdue
    oldest = value("onboarding_review_oldest_case_age_seconds")
    assert oldest is not None and 0.1 <= oldest < 5
    assert abs((value("onboarding_review_case_deadline_seconds") or 0) - 0.05) < 1e-3


def test_an_empty_queue_exports_zeros_and_no_deadline(redis_client: redis.Redis) -> None:
    registry = CollectorRegistry()
    registry.register(ReviewQueueCollector(redis_client, STREAM))
    assert registry.get_sample_value("onboarding_review_overdue_cases") == 0
    assert registry.get_sample_value("onboarding_review_oldest_case_age_seconds") == 0
    assert registry.get_sample_value("onboarding_review_case_deadline_seconds") is None


def test_above_the_state_count_limit_only_the_total_is_exported(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sla.review

    _queue(redis_client)
    monkeypatch.setattr(sla.review, "STATE_SCAN_LIMIT", 2)
    figures = queue_figures(redis_client, STREAM)
    assert (figures.depth, figures.open, figures.claimed) == (3, None, None)
    registry = CollectorRegistry()
    registry.register(ReviewQueueCollector(redis_client, STREAM))
    assert registry.get_sample_value("onboarding_review_queue_depth", {"state": "total"}) == 3
    assert registry.get_sample_value("onboarding_review_queue_depth", {"state": "open"}) is None


def test_the_page_section_lists_overdue_cases_with_user_deadline_and_assignee(
    redis_client: redis.Redis,
    acl_users: Callable[[str], redis.Redis],  # noqa: F811 (the fixture imported above)
) -> None:
    _queue(redis_client)
    view = review_view(acl_users("sla"), STREAM)
    assert (view.depth, view.claimed, view.overdue_count) == (3, 1, 2)
    assert [(c.case_id, c.user_id, c.assignee) for c in view.overdue] == [
        ("evt-late-1", "user-1", None),
        ("evt-late-2", "user-2", "alice"),
    ]
    page = render_section(view)
    assert "<h2>Review queue</h2>" in page
    assert '<div class="value" id="review-overdue">2</div>' in page
    assert '<div class="value" id="review-claimed">1</div>' in page
    assert "<td>evt-late-2</td><td>user-2</td>" in page and "<td>alice</td>" in page
    assert "<td>unassigned</td>" in page
    assert "evt-fresh" not in page and "evt-done" not in page
    assert view.to_dict()["overdue"][0]["deadline_at"].endswith("+00:00")


def test_the_page_section_escapes_what_applicants_and_reviewers_typed(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAM, review("evt-x", "<script>alert(1)</script>"), review_deadline_s=0.01)
    time.sleep(0.05)
    page = render_section(review_view(redis_client, STREAM))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_sla_page_and_its_json_carry_the_review_queue(
    redis_client: redis.Redis,
    acl_users: Callable[[str], redis.Redis],  # noqa: F811 (the fixture imported above)
) -> None:
    from onboarding.settings import StreamSettings
    from sla.metrics import SlaMetrics
    from sla.observer import DecisionObserver
    from sla.page import render, snapshot
    from sla.settings import SlaSettings
    from tests.conftest import TEST_REDIS_URL

    _queue(redis_client)
    settings = SlaSettings(streams=StreamSettings(redis_url=TEST_REDIS_URL, decisions_stream=STREAM))
    sla = acl_users("sla")
    data = snapshot(sla, settings, DecisionObserver(sla, settings, SlaMetrics(settings)), list, None)
    page = render(data)
    assert page.count("<h2>Review queue</h2>") == 1
    assert '<div class="value" id="review-overdue">2</div>' in page and "<td>evt-late-1</td>" in page
    review_json = data.to_dict()["review"]
    assert (review_json["depth"], review_json["claimed"], review_json["overdue_count"]) == (3, 1, 2)
    assert [c["assignee"] for c in review_json["overdue"]] == [None, "alice"]
