"""The review cases' history in the weekly archive, against a real Redis: old entries are
copied, verified and only then deleted from Redis (as the archive's `worker` ACL user); a run
that dies between copy and delete is finished by the next without a lost or doubled entry;
`onboarding-archive audit --user-id` shows a user's case history from Redis and the archive,
merged, oldest first; `onboarding-erase` removes it from both."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from archiver.cli import main as archive_main
from archiver.jobs import archive_all
from archiver.review_history import HISTORY_INSTANCE, archived_entries, erase_archived_history, live_entries
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore
from onboarding import keys
from onboarding.decision import DecisionEvent, publish_decision, utc_now
from onboarding.settings import StreamSettings
from ops.erase import erase_from_streams
from review import ReviewQueue
from tests.conftest import TEST_REDIS_URL
from tests.unit.test_redis_acl import acl_users  # noqa: F401 (the fixture)

STREAM = keys.DECISIONS_STREAM
HISTORY = keys.review_history_key(STREAM)
# A run "now + 8 days" has its cut-off (7 days) after every entry written by the test.
LATER = datetime.now(UTC) + timedelta(days=8)


class Killed(BaseException):
    """The archive process dying at the fault point (nothing catches a BaseException)."""


def review(event_id: str, user_id: str) -> DecisionEvent:
    return DecisionEvent(event_id, user_id, "review", 0.42, [], "v1", f"signup__{event_id}", {"occurred_at": utc_now()})


def _cases(client: redis.Redis, *cases: tuple[str, str]) -> None:
    """Each case opened, claimed by alice, released by a lead, then decided by bob (who claims
    it in the same step): five entries."""
    queue = ReviewQueue(client, STREAM)
    for event_id, user_id in cases:
        publish_decision(client, STREAM, review(event_id, user_id))
        queue.claim(event_id, "alice")
        queue.release(event_id, "lead", force=True)
        queue.decide(event_id, "bob", "approve", "income verified")


def _settings(tmp_path: Path, batch_size: int = 2000) -> ArchiveSettings:
    return ArchiveSettings(archive_dir=tmp_path / "archive", instances=(), batch_size=batch_size)


def _live(client: redis.Redis) -> list[dict]:
    return list(live_entries(client, STREAM))


def test_old_history_is_archived_verified_then_removed_from_redis_as_the_worker_user(
    redis_client: redis.Redis,
    acl_users: Callable[[str], redis.Redis],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    _cases(redis_client, ("evt-1", "user-a"), ("evt-2", "user-b"))
    before = _live(redis_client)
    assert [e["action"] for e in before if e["case_id"] == "evt-1"] == [
        "opened",
        "claimed",
        "released",
        "claimed",
        "decided",
    ]
    assert before[0]["user_id"] == "user-a" and before[0]["actor"] == "onboarding"
    settings = _settings(tmp_path, batch_size=3)
    store = ArchiveStore(settings.archive_dir)
    in_redis_at_copy: list[int] = []

    def after_copy() -> None:  # each batch is readable in the archive while Redis still holds it
        in_redis_at_copy.append(int(redis_client.xlen(HISTORY)))
        archived_entries(store)

    archive_all(settings, acl_users("worker"), now=LATER, after_copy=after_copy)

    assert in_redis_at_copy == [10, 7, 4, 1]  # 10 entries in batches of 3: deleted one batch at a time
    assert redis_client.xlen(HISTORY) == 0
    assert archived_entries(store) == before  # every field of every entry, in order
    journal = list(store.batches(HISTORY_INSTANCE))
    assert len(journal) == 4 and {b.state for b in journal} == {"deleted"}
    for record in journal:
        store.verify_batch(HISTORY_INSTANCE, record)
    assert store.instances() == []  # not mistaken for an Airflow instance (the SLA page, the audit)


def test_entries_newer_than_the_cutoff_stay_in_redis(redis_client: redis.Redis, tmp_path: Path) -> None:
    _cases(redis_client, ("evt-1", "user-a"))
    archive_all(_settings(tmp_path), redis_client)  # cut-off a week ago: nothing is that old
    assert redis_client.xlen(HISTORY) == 5
    assert archived_entries(ArchiveStore(tmp_path / "archive")) == []


def test_a_run_killed_between_copy_and_delete_is_finished_without_loss_or_duplicates(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    _cases(redis_client, ("evt-1", "user-a"), ("evt-2", "user-b"))
    before = _live(redis_client)
    settings = _settings(tmp_path, batch_size=5)
    store = ArchiveStore(settings.archive_dir)

    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        archive_all(settings, redis_client, now=LATER, after_copy=die)
    assert [b.state for b in store.batches(HISTORY_INSTANCE)] == ["copied"]
    assert redis_client.xlen(HISTORY) == 10  # copied, not deleted: still all in Redis
    assert len(archived_entries(store)) == 5

    archive_all(settings, redis_client, now=LATER)

    assert redis_client.xlen(HISTORY) == 0
    assert archived_entries(store) == before  # each entry exactly once
    assert {b.state for b in store.batches(HISTORY_INSTANCE)} == {"deleted"}


def test_a_batch_deleted_before_its_journal_said_so_is_not_archived_twice(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    _cases(redis_client, ("evt-1", "user-a"))
    before = _live(redis_client)
    settings = _settings(tmp_path, batch_size=3)
    store = ArchiveStore(settings.archive_dir)
    archive_all(settings, redis_client, now=LATER)
    for record in store.batches(HISTORY_INSTANCE):  # as if killed between XDEL and the journal update
        record.state = "copied"
        store.save_batch(HISTORY_INSTANCE, record)
    _cases(redis_client, ("evt-2", "user-b"))  # new entries meanwhile: archived once, too

    archive_all(settings, redis_client, now=LATER)

    assert {b.state for b in store.batches(HISTORY_INSTANCE)} == {"deleted"}
    archived = archived_entries(store)
    assert archived[:5] == before and len(archived) == 10
    assert len({e["entry_id"] for e in archived}) == 10


def _audit(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, user: str) -> tuple:
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    code = archive_main(["audit", "--user-id", user])
    out, err = capsys.readouterr()
    rows = [json.loads(line)["review_history"] for line in out.splitlines() if '"review_history"' in line]
    return code, rows, err


def test_audit_shows_a_users_case_history_from_the_archive_and_redis_oldest_first(
    redis_client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _cases(redis_client, ("evt-old", "user-a"), ("evt-other", "user-b"))
    archive_all(_settings(tmp_path), redis_client, now=LATER)  # the first two cases: archive only
    _cases(redis_client, ("evt-new", "user-a"))  # still in Redis
    publish_decision(redis_client, STREAM, review("evt-open", "user-a"))

    code, rows, err = _audit(capsys, monkeypatch, tmp_path, "user-a")

    assert code == 0
    assert "review case history of user user-a, oldest first: 11 entries (6 from Redis, 5 from the archive)" in err
    assert [(r["case_id"], r["action"], r["actor"], r["source"]) for r in rows] == [
        ("evt-old", "opened", "onboarding", "archive"),
        ("evt-old", "claimed", "alice", "archive"),
        ("evt-old", "released", "lead", "archive"),
        ("evt-old", "claimed", "bob", "archive"),
        ("evt-old", "decided", "bob", "archive"),
        ("evt-new", "opened", "onboarding", "redis"),
        ("evt-new", "claimed", "alice", "redis"),
        ("evt-new", "released", "lead", "redis"),
        ("evt-new", "claimed", "bob", "redis"),
        ("evt-new", "decided", "bob", "redis"),
        ("evt-open", "opened", "onboarding", "redis"),
    ]
    assert rows[2]["detail"] == "released the claim of alice"
    assert rows[4]["detail"] == "approve: income verified"
    assert all(r["user_id"] == "user-a" and r["at"] for r in rows)
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)


def test_audit_shows_an_entry_left_in_both_places_by_a_killed_run_once(
    redis_client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _cases(redis_client, ("evt-1", "user-a"))

    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        archive_all(_settings(tmp_path), redis_client, now=LATER, after_copy=die)
    code, rows, _err = _audit(capsys, monkeypatch, tmp_path, "user-a")
    assert code == 0 and [r["action"] for r in rows] == ["opened", "claimed", "released", "claimed", "decided"]


def test_erasure_removes_a_users_cases_and_history_from_redis_and_the_archive(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    _cases(redis_client, ("evt-old", "user-a"), ("evt-b", "user-b"))
    settings = _settings(tmp_path, batch_size=3)
    store = ArchiveStore(settings.archive_dir)
    archive_all(settings, redis_client, now=LATER)
    _cases(redis_client, ("evt-new", "user-a"))
    publish_decision(redis_client, STREAM, review("evt-open", "user-a"))
    publish_decision(redis_client, STREAM, review("evt-b2", "user-b"))
    streams = StreamSettings(redis_url=TEST_REDIS_URL)

    dry = erase_from_streams(redis_client, streams, "user-a", dry_run=True)
    # evt-old's history is archived, but its decided case hash still lives (REVIEW_CASE_TTL_S).
    assert dry.review_cases == ["evt-new", "evt-old", "evt-open"] and len(dry.review_history) == 6
    assert redis_client.xlen(HISTORY) == 7

    report = erase_from_streams(redis_client, streams, "user-a")
    erased = erase_archived_history(store, "user-a", report.review_cases)

    assert erased == 5
    assert {e["case_id"] for e in _live(redis_client)} == {"evt-b2"}
    assert {e["case_id"] for e in archived_entries(store)} == {"evt-b"}
    for case in ("evt-new", "evt-old", "evt-open"):
        assert not redis_client.exists(keys.review_case_key(STREAM, case))
    assert not redis_client.exists(keys.final_marker_key(STREAM, "evt-new"))
    assert [m.decode() for m in redis_client.zrange(keys.review_queue_key(STREAM), 0, -1)] == ["evt-b2"]
    assert ReviewQueue(redis_client, STREAM).get("evt-b2").user_id == "user-b"
    for record in store.batches(HISTORY_INSTANCE):  # the journal still verifies the rewritten files
        store.verify_batch(HISTORY_INSTANCE, record)
