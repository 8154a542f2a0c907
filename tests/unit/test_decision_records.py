"""Decision records (issue 29, item 1): one per decision, written with it, holding what decided."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from airflow_adapter import tasks
from onboarding import keys
from risk.artifacts import current_version, load_model
from risk.evidence import RECORD_VERSION
from risk.integrity import Signer, verify_version
from risk.model import probability_bad
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL

RECORDS = keys.decision_records_stream(keys.DECISIONS_STREAM)


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, trained_model_dir: Path) -> Iterator[Path]:
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("RISK_MODEL_DIR", str(trained_model_dir))
    tasks.settings.cache_clear()
    yield trained_model_dir
    tasks.settings.cache_clear()


def records(client: redis.Redis) -> list[dict]:
    return [json.loads(fields[b"record"]) for _id, fields in client.xrange(RECORDS)]


def decisions(client: redis.Redis) -> list[dict]:
    return [json.loads(fields[b"payload"]) for _id, fields in client.xrange(keys.DECISIONS_STREAM)]


def test_a_decision_has_one_record_with_inputs_features_score_policy_model_hash_and_code(
    redis_client: redis.Redis, task_env: Path
) -> None:
    signup = new_signup(rng=random.Random(7))
    conf = {**signup, "accepted_at": "2026-12-04T10:00:00+00:00"}
    run_id = f"signup__{signup['event_id']}"
    tasks.decide_and_publish(conf, None, run_id)
    tasks.decide_and_publish(conf, None, run_id)  # a retried task: no second decision, no second record
    (record,) = records(redis_client)
    (decision,) = decisions(redis_client)
    model = load_model(task_env, current_version(task_env))
    assert record["record_version"] == RECORD_VERSION
    assert record["event_id"] == signup["event_id"] and record["user_id"] == signup["user_id"]
    assert record["inputs"] == conf  # as received
    assert record["features"]["log_credit_amount"] > 0 and "checking_account" in record["features"]
    assert record["score"] == decision["score"] == round(probability_bad(model.scorer, signup["application"]), 6)
    assert record["decision"] == decision["decision"]
    assert record["policy"] == model.policy.to_dict()
    assert record["model"] == {
        "version": current_version(task_env),
        "content_sha256": verify_version(task_env / current_version(task_env), Signer().verifier()),
        "dataset": "german_credit",
    }
    assert record["code"]["package"] == "onboarding-decisions" and record["code"]["version"]
    assert record["timestamps"]["published_at"] == decision["timestamps"]["published_at"]
    assert {"occurred_at", "accepted_at", "scored_at", "decided_at", "recorded_at"} <= set(record["timestamps"])
    assert record["error"] is None and record["shadow"] is None


def test_a_failed_pipeline_is_recorded_with_its_error(redis_client: redis.Redis, task_env: Path) -> None:
    signup = new_signup(rng=random.Random(8))
    conf = {**signup, "accepted_at": "2026-12-04T10:00:00+00:00"}
    dag_run = SimpleNamespace(conf=conf, run_id=f"signup__{signup['event_id']}")
    tasks.answer_failed_run({"dag_run": dag_run, "reason": "task_failure"})
    (record,) = records(redis_client)
    assert record["decision"] == "review" and record["error"] == "task_failure"
    assert record["inputs"] == conf and record["model"] is None and record["score"] is None


# -- archive, retention, erasure ---------------------------------------------------------------


def publish_with_record(client: redis.Redis, event_id: str, user_id: str) -> None:
    from onboarding.decision import DecisionEvent, publish_decision

    event = DecisionEvent(event_id, user_id, "decline", 0.7, [], "v1", f"signup__{event_id}")
    record = {
        "record_version": RECORD_VERSION,
        "event_id": event_id,
        "user_id": user_id,
        "run_id": f"signup__{event_id}",
        "inputs": {"event_id": event_id, "user_id": user_id, "application": {"age_years": 40}},
        "score": 0.7,
    }
    publish_decision(client, keys.DECISIONS_STREAM, event, record=record)


def old_record(client: redis.Redis, entry_id: str, user_id: str) -> None:
    record = {"event_id": f"old-{user_id}", "user_id": user_id, "inputs": {"user_id": user_id}}
    client.xadd(
        RECORDS,
        {"event_id": record["event_id"], "user_id": user_id, "decision_entry": "0-1", "record": json.dumps(record)},
        id=entry_id,
    )


def archive_text(store_root: Path) -> str:
    import pyarrow.parquet as pq

    return "".join(
        json.dumps(pq.read_table(path).to_pylist()) for path in sorted(store_root.glob("_records/**/*.parquet"))
    )


def test_the_weekly_archive_moves_records_and_removes_them_after_the_retention_period(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from archiver.decision_records import all_records, retention_cutoff
    from archiver.jobs import archive_all
    from archiver.settings import ArchiveSettings

    now = datetime.now(UTC)
    # Decided 26 months ago (past a 25-month retention) and 24 months ago (inside it).
    old_record(redis_client, f"{int(retention_cutoff(now, 26).timestamp() * 1000)}-0", "u-expired")
    old_record(redis_client, f"{int(retention_cutoff(now, 24).timestamp() * 1000)}-0", "u-kept")
    publish_with_record(redis_client, "e-1", "u-1")
    settings = ArchiveSettings(archive_dir=tmp_path / "archive", cutoff_days=0, record_retention_months=25)
    archive_all(settings, redis_client, now=now + timedelta(seconds=1))
    assert redis_client.xlen(RECORDS) == 0  # moved, not copied
    from archiver.store import ArchiveStore

    kept = all_records(redis_client, ArchiveStore(settings.archive_dir), keys.DECISIONS_STREAM)
    assert [r["user_id"] for r in kept] == ["u-kept", "u-1"]
    assert "u-expired" not in archive_text(settings.archive_dir)
    # A second run changes nothing.
    archive_all(settings, redis_client, now=now + timedelta(seconds=2))
    assert [r["user_id"] for r in all_records(None, ArchiveStore(settings.archive_dir), keys.DECISIONS_STREAM)] == [
        "u-kept",
        "u-1",
    ]


def test_retention_is_counted_in_calendar_months() -> None:
    from datetime import UTC, datetime

    from archiver.decision_records import retention_cutoff

    assert retention_cutoff(datetime(2026, 12, 31, tzinfo=UTC), 25) == datetime(2024, 11, 30, tzinfo=UTC)
    assert retention_cutoff(datetime(2026, 3, 15, tzinfo=UTC), 25) == datetime(2024, 2, 15, tzinfo=UTC)


def test_erasure_refuses_to_change_records_inside_the_retention_period(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from archiver.decision_records import erase_user_records
    from archiver.store import ArchiveStore

    publish_with_record(redis_client, "e-1", "u-1")
    publish_with_record(redis_client, "e-2", "u-2")
    before = redis_client.xrange(RECORDS)
    report = erase_user_records(
        redis_client, ArchiveStore(tmp_path), keys.DECISIONS_STREAM, "u-1", "refuse", retention_months=25
    )
    assert len(report.redis) == 1
    decided = datetime.fromtimestamp(int(before[0][0].decode().split("-")[0]) / 1000, UTC)
    kept_until = datetime.fromisoformat(report.kept_until or "")
    assert (kept_until.year * 12 + kept_until.month) - (decided.year * 12 + decided.month) == 25
    assert redis_client.xrange(RECORDS) == before  # nothing changed


def test_erasure_pseudonymises_records_in_redis_and_the_archive(redis_client: redis.Redis, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from archiver.decision_records import all_records, archive_records, erase_user_records, pseudonym
    from archiver.store import ArchiveStore

    key = "k" * 32
    store = ArchiveStore(tmp_path / "archive")
    publish_with_record(redis_client, "e-1", "u-1")
    publish_with_record(redis_client, "e-2", "u-2")
    archive_records(redis_client, store, keys.DECISIONS_STREAM, datetime.now(UTC) + timedelta(seconds=1))
    publish_with_record(redis_client, "e-3", "u-1")  # still in Redis
    report = erase_user_records(
        redis_client, store, keys.DECISIONS_STREAM, "u-1", "pseudonymise", retention_months=25, key=key
    )
    assert report.archived == 1 and len(report.redis) == 1
    every = all_records(redis_client, store, keys.DECISIONS_STREAM)
    assert [r["user_id"] for r in every] == [pseudonym(key, "u-1", "user"), "u-2", pseudonym(key, "u-1", "user")]
    assert all(r.get("pseudonymised") for r in every if r["user_id"] != "u-2")
    assert [r["score"] for r in every] == [0.7, 0.7, 0.7]  # what was decided stays
    text = archive_text(tmp_path / "archive") + json.dumps(
        [list(f.items()) for _i, f in redis_client.xrange(RECORDS)], default=str
    )
    assert '"u-1"' not in text and "e-1" not in text and "e-3" not in text and "u-2" in text


def test_the_erasure_switch_is_a_checked_setting() -> None:
    from archiver.settings import ArchiveSettings
    from onboarding.errors import ConfigError

    assert ArchiveSettings.from_env({}).record_erasure == "refuse"
    assert ArchiveSettings.from_env({}).record_retention_months == 25
    with pytest.raises(ConfigError, match="needs DECISION_RECORD_PSEUDONYM_KEY"):
        ArchiveSettings.from_env({"DECISION_RECORD_ERASURE": "pseudonymise"})
    with pytest.raises(ConfigError, match="must be refuse or pseudonymise"):
        ArchiveSettings.from_env({"DECISION_RECORD_ERASURE": "delete"})
    on = ArchiveSettings.from_env(
        {"DECISION_RECORD_ERASURE": "pseudonymise", "DECISION_RECORD_PSEUDONYM_KEY": "x" * 32}
    )
    assert on.record_erasure == "pseudonymise" and "x" * 32 not in repr(on)
