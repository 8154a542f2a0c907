"""`now()` on SQLite to the millisecond (airflow_adapter/sqlite_now.py).

Airflow's scheduler starts a run once `run_after <= now()`. Each case stores a run stamped
50 ms ago, as Airflow stores it on SQLite (text to the microsecond), in the same second as the
database's clock, and asks the scheduler's question. In a fresh interpreter each, since the
rendering is process-wide. Without the fix the run is not due until the next full second
(the stall the fix removes); with it, it is due at once.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql

from airflow_adapter import sqlite_now
from testkit.fresh_python import run_script

ROOT = Path(__file__).resolve().parents[2]

ASK_THE_SCHEDULERS_QUESTION = """
import datetime, json, sys, time
installed = None
if sys.argv[1] == "installed":
    from airflow_adapter import sqlite_now
    installed = sqlite_now.install()
elif sys.argv[1] == "unproven":  # an Airflow release it was not proven on
    from airflow_adapter import sqlite_now
    installed = sqlite_now.install(airflow="3.4.0")
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, create_engine, func, insert, select

engine = create_engine("sqlite://")
metadata = MetaData()
runs = Table("dag_run", metadata, Column("id", Integer, primary_key=True), Column("run_after", DateTime))
metadata.create_all(engine)
due, stored = [], None
with engine.begin() as conn:
    for _ in range(4):
        while not 0.15 < time.time() % 1 < 0.6:  # well inside a second
            time.sleep(0.01)
        stamp = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(milliseconds=50)
        conn.execute(runs.delete())
        conn.execute(insert(runs).values(run_after=stamp))
        stored = conn.exec_driver_sql("SELECT run_after FROM dag_run").scalar()
        due.append(conn.execute(select(func.count()).where(runs.c.run_after <= func.now())).scalar())
        time.sleep(0.45)
    now = conn.exec_driver_sql(str(select(func.now()).compile(engine))).scalar()  # the raw text
print(json.dumps({"due": due, "stored": stored, "now": now, "installed": installed}))
"""


def ask(mode: str, tmp_path: Path) -> dict[str, object]:
    return run_script(ASK_THE_SCHEDULERS_QUESTION, tmp_path, mode)


def test_a_run_stamped_earlier_in_the_same_second_is_due_at_once(tmp_path: Path) -> None:
    answer = ask("installed", tmp_path)
    assert answer["installed"] is True  # on the Airflow release installed here, which it was proven on
    assert answer["due"] == [1, 1, 1, 1]
    assert len(str(answer["stored"]).split(".")[-1]) == 6  # stored to the microsecond, as Airflow does
    assert len(str(answer["now"]).split(".")[-1]) == 3  # the clock now reads milliseconds


def test_on_an_airflow_it_was_not_proven_on_it_is_refused_and_sqlite_is_left_as_it_is(tmp_path: Path) -> None:
    answer = ask("unproven", tmp_path)
    assert answer["installed"] is False
    assert answer["due"] == [0, 0, 0, 0]
    assert "." not in str(answer["now"])


def test_without_it_sqlite_makes_the_run_wait_for_the_next_second(tmp_path: Path) -> None:
    answer = ask("as-is", tmp_path)
    assert answer["due"] == [0, 0, 0, 0]
    assert "." not in str(answer["now"])  # CURRENT_TIMESTAMP: whole seconds


def test_postgresql_is_left_as_it_is() -> None:
    sqlite_now.install()  # process-wide, for SQLite only
    assert str(select(func.now()).compile(dialect=postgresql.dialect())) == "SELECT now() AS now_1"
