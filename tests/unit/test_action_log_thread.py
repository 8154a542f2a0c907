"""The api-server's audit-log commit does not block its event loop (airflow_adapter/action_log_thread.py).

The subprocess cases run Airflow's own `action_logging` dependency, as the realtime
instance's processes load it (deploy/realtime/airflow_local_settings.py first), against a
SQLite metadata file whose write lock another connection holds, as another request's
uncommitted write does on the local stack. A ticker task measures how long the event loop
went without running while the audit row waited for the lock. They fail when the commit is
back on the event loop, when the audit row is no longer written, or when Airflow stops
blocking the loop itself (then the fix can go).
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from airflow_adapter import action_log_thread
from testkit.fresh_python import run_script

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SETTINGS = ROOT / "deploy" / "realtime" / "airflow_local_settings.py"
LOCK_HELD_S = 1.0

AUDIT_WHILE_LOCKED = f"""
import asyncio, json, runpy, sqlite3, threading, time
runpy.run_path({str(LOCAL_SETTINGS)!r})  # what airflow.settings does with the instance's copy
from airflow.api_fastapi.logging import decorators
from airflow.models import Log
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request

engine = create_engine("sqlite:///audit.db", connect_args={{"timeout": 5, "check_same_thread": False}})
Log.__table__.create(engine)
holder = sqlite3.connect("audit.db", isolation_level=None, check_same_thread=False)
holder.execute("PRAGMA journal_mode=WAL")


def trigger_dag_run():
    pass


request = Request({{"type": "http", "method": "POST", "path": "/api/v2/dags/onboarding/dagRuns", "headers": [],
                   "query_string": b"", "path_params": {{"dag_id": "onboarding"}}, "endpoint": trigger_dag_run}})
dependency = decorators.action_logging()
ticks = []


async def main():
    stop = asyncio.Event()

    async def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    # A first request, with the lock free, pays the one-time costs (SQLAlchemy configuring
    # Airflow's mappers, the thread pool's start) that are not what is measured.
    with Session(engine) as session:
        await dependency(request=request, session=session, user=None)
    holder.execute("BEGIN IMMEDIATE")  # another request's write, committed in {LOCK_HELD_S} s
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    threading.Timer({LOCK_HELD_S}, holder.execute, args=("COMMIT",)).start()
    started = time.monotonic()
    with Session(engine) as session:
        await dependency(request=request, session=session, user=None)
    ended = time.monotonic()
    stop.set()
    await task
    return started, ended


started, ended = asyncio.run(main())
window = [started] + [t for t in ticks if started < t < ended] + [ended]
longest_stall = max(b - a for a, b in zip(window, window[1:]))
with Session(engine) as session:
    rows = session.scalars(select(Log)).all()
print(json.dumps({{"wrapped": getattr(decorators.action_logging, "__onboarding_commit_in_thread__", False),
                  "waited_s": ended - started, "longest_stall_s": longest_stall,
                  "rows": [[r.event, r.dag_id, r.owner] for r in rows]}}))
"""


def audit_while_locked(tmp_path: Path, **env: str) -> dict[str, Any]:
    return run_script(AUDIT_WHILE_LOCKED, tmp_path, unset=[action_log_thread.ENV_VAR], env=env)


def test_the_event_loop_keeps_serving_while_the_audit_row_waits_for_the_write_lock(tmp_path: Path) -> None:
    outcome = audit_while_locked(tmp_path)
    assert outcome["wrapped"] is True
    # The audit row waited for the other write, as before, and was committed once it ended ...
    assert outcome["waited_s"] >= LOCK_HELD_S * 0.9
    assert outcome["rows"] == [["trigger_dag_run", "onboarding", "anonymous"]] * 2
    # ... while the event loop went on serving (a 10 ms ticker never waited long).
    assert outcome["longest_stall_s"] < 0.3


def test_without_it_airflow_blocks_the_event_loop_so_the_fix_is_still_needed(tmp_path: Path) -> None:
    outcome = audit_while_locked(tmp_path, **{action_log_thread.ENV_VAR: "false"})
    assert outcome["wrapped"] is False
    assert outcome["rows"] == [["trigger_dag_run", "onboarding", "anonymous"]] * 2
    assert outcome["longest_stall_s"] >= LOCK_HELD_S * 0.9


class _Session:
    def __init__(self) -> None:
        self.added: list[object] = []
        self.committed = 0
        self.flag = False

    def add(self, row: object) -> None:
        self.added.append(row)

    def commit(self) -> None:
        self.committed += 1


def test_the_wrapped_dependency_does_the_same_work_with_the_commit_in_a_thread() -> None:
    import threading

    loop_thread: list[int] = []
    commit_threads: list[int] = []

    async def log_action(request: object, session: Any, user: object) -> str:
        loop_thread.append(threading.get_ident())
        session.add("row")
        session.flag = True  # attributes set on the session reach the real one
        session.commit()
        return "done"

    wrapped = action_log_thread.commit_in_thread(log_action)
    assert wrapped is not None
    session = _Session()
    original_commit = session.commit
    session.commit = lambda: (commit_threads.append(threading.get_ident()), original_commit())  # type: ignore[method-assign]
    assert asyncio.run(wrapped(request=None, session=session, user=None)) == "done"
    assert session.added == ["row"] and session.flag is True
    assert session.committed == 1
    assert commit_threads and commit_threads[0] != loop_thread[0]


def test_a_dependency_it_was_not_written_for_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    def sync_log_action(request: object, session: object) -> None:
        return None

    async def no_session(request: object) -> None:
        return None

    assert action_log_thread.commit_in_thread(sync_log_action) is None
    assert action_log_thread.commit_in_thread(no_session) is None
    module = types.ModuleType("fake_decorators")
    module.action_logging = lambda event=None: sync_log_action  # type: ignore[attr-defined]
    with caplog.at_level("WARNING"):
        assert action_log_thread.wrap(module) is False
    assert "left as it is" in caplog.text
    assert module.action_logging() is sync_log_action  # type: ignore[attr-defined]
