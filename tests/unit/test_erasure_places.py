"""The places `onboarding-erase` reaches beyond the streams: the awaiting set and its run conf,
the audit `log` table of a metadata database, the task log folders; and the SLA service's
bound on awaiting signups that are never observed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
import sqlalchemy as sa
from airflow.models.log import Log

from archiver.live_erase import delete_log_rows, user_log_rows
from onboarding import keys
from onboarding.awaiting import expire_awaiting, record_accepted
from onboarding.settings import StreamSettings
from ops.erase import erase_from_streams, erase_task_logs
from risk.samples import new_signup
from sla.metrics import SlaMetrics
from sla.observer import DecisionObserver
from sla.settings import SlaSettings
from tests.conftest import TEST_REDIS_URL

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)


def _conf(user: str) -> dict:
    return {**new_signup(user_id=user), "accepted_at": "2026-01-01T00:00:00+00:00"}


def test_awaiting_signups_and_their_conf_are_erased_by_user(redis_client: redis.Redis) -> None:
    confs = [_conf("alice"), _conf("alice"), _conf("alice-2"), _conf("bob")]
    for conf in confs:
        assert record_accepted(redis_client, STREAMS, conf["event_id"], time.time(), conf)
    report = erase_from_streams(redis_client, STREAMS, "alice")
    alice = sorted(c["event_id"] for c in confs[:2])
    assert report.awaiting == alice and set(alice) <= set(report.event_ids)
    left = {k.decode() for k in redis_client.hkeys(keys.awaiting_conf_key(STREAMS.signups_stream))}
    assert left == {confs[2]["event_id"], confs[3]["event_id"]}
    members = {m.decode() for m in redis_client.zrange(keys.awaiting_key(STREAMS.signups_stream), 0, -1)}
    assert members == left


def test_the_sla_service_forgets_awaiting_signups_older_than_the_decisions_retention(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    old, fresh = _conf("alice"), _conf("bob")
    record_accepted(redis_client, STREAMS, old["event_id"], now - 8 * 24 * 3600, old)
    record_accepted(redis_client, STREAMS, fresh["event_id"], now - 60, fresh)
    settings = SlaSettings(streams=STREAMS)
    observer = DecisionObserver(redis_client, settings, SlaMetrics(settings))
    assert observer.expire_awaiting(now) == [old["event_id"]]
    conf_key = keys.awaiting_conf_key(STREAMS.signups_stream)
    assert [k.decode() for k in redis_client.hkeys(conf_key)] == [fresh["event_id"]]
    assert expire_awaiting(redis_client, STREAMS, now - 7 * 24 * 3600) == []
    assert SlaSettings.from_env({"DECISIONS_RETENTION_S": "3600"}).awaiting_retention_s == 3600


def _audit_db(tmp_path: Path) -> sa.Engine:
    """Airflow 3.3.2's own `log` table, with rows as its REST API and task runner write them."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    Log.metadata.create_all(engine, tables=[Log.__table__])  # type: ignore[list-item]
    rows = []
    for user, event_id in (("alice", "evt-1"), ("alice_", "evt-2"), ("ali%e", "evt-3"), ("bob", "evt-4")):
        run_id = keys.run_id_for(event_id)
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"event_id": event_id, "user_id": user}}
        rows.append(dict(event="trigger_dag_run", dag_id="onboarding", run_id=run_id, extra=json.dumps(body)))
        rows.append(dict(event="success", dag_id="onboarding", run_id=run_id, extra='{"host_name": "vm"}'))
    # A trigger whose row lost its run id, and one that only mentions alice as a value elsewhere.
    orphan = {"conf": {"event_id": "evt-5", "user_id": "alice"}, "method": "POST"}
    rows.append(dict(event="trigger_dag_run", dag_id="onboarding", run_id=None, extra=json.dumps(orphan)))
    rows.append(dict(event="patch", dag_id="x", run_id=None, extra=json.dumps({"note": '"user_id": "alice"'})))
    with engine.begin() as conn:
        conn.execute(sa.insert(Log.__table__), rows)
    return engine


def test_audit_log_rows_are_found_by_run_and_by_user_exactly(tmp_path: Path) -> None:
    engine = _audit_db(tmp_path)
    found = user_log_rows(engine, "alice", [keys.run_id_for("evt-1")])
    with engine.connect() as conn:
        extras = dict(conn.execute(sa.select(Log.__table__.c.id, Log.__table__.c.extra)).all())
    assert found.rows == [1, 2, 9], [extras[i] for i in found.rows]
    assert found.runs == [keys.run_id_for("evt-1")]
    # By user alone (the runs unknown), LIKE wildcards in ids match nothing extra.
    assert user_log_rows(engine, "alice", []).rows == [1, 9]
    assert user_log_rows(engine, "ali%e", []).rows == [5]
    assert user_log_rows(engine, "alice_", []).rows == [3]
    delete_log_rows(engine, found.rows)
    with engine.connect() as conn:
        left = [r[0] for r in conn.execute(sa.select(Log.__table__.c.id).order_by(Log.__table__.c.id))]
    assert left == [3, 4, 5, 6, 7, 8, 10]


def test_task_log_folders_of_the_runs_are_removed_and_nothing_else(tmp_path: Path) -> None:
    dag_dir = tmp_path / "dag_id=onboarding"
    for run in ("signup__evt-1", "signup__evt-2"):
        (dag_dir / f"run_id={run}" / "task_id=decide").mkdir(parents=True)
        (dag_dir / f"run_id={run}" / "task_id=decide" / "attempt=1.log").write_text("{}")
    assert erase_task_logs(tmp_path, ["signup__evt-1", "signup__evt-9", "../x"], dry_run=True) == [
        "dag_id=onboarding/run_id=signup__evt-1"
    ]
    assert (dag_dir / "run_id=signup__evt-1").is_dir()
    erase_task_logs(tmp_path, ["signup__evt-1"])
    assert sorted(p.name for p in dag_dir.iterdir()) == ["run_id=signup__evt-2"]
