"""Every DAG file imports cleanly, without touching a database or the network at parse time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "dags"

# Runs in a fresh interpreter: sockets and ORM sessions raise if parsing tries to use them.
PARSE = textwrap.dedent(
    """
    import json, socket, sys
    def refuse(*args, **kwargs):
        raise RuntimeError("network access at DAG parse time")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    import airflow.settings
    from sqlalchemy.orm import Session
    def no_db(*args, **kwargs):
        raise RuntimeError("database access at DAG parse time")
    Session.execute = no_db
    Session.scalar = no_db
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tasks": {
                t.task_id: {
                    "upstream": sorted(t.upstream_task_ids),
                    "trigger_rule": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
                    "retries": t.retries,
                    "weight_rule": str(getattr(t.weight_rule, "value", t.weight_rule)),
                }
                for t in dag.tasks
            },
            "params": sorted(dag.params.keys()),
            "schedule": str(dag.schedule),
            "paused": dag.is_paused_upon_creation,
        }
    print("RESULT" + json.dumps(out))
    """
)


def parse(folder: Path, **env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PARSE, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    import json

    return json.loads(line.removeprefix("RESULT"))


def test_realtime_dags_import_without_errors_or_io() -> None:
    out = parse(DAGS / "realtime")
    assert out["errors"] == {}
    assert list(out["dags"]) == ["onboarding"]


def test_an_unknown_dag_shape_is_an_import_error() -> None:
    out = parse(DAGS / "realtime", ONBOARDING_DAG_SHAPE="sideways")
    assert "ONBOARDING_DAG_SHAPE='sideways' must be single or stepwise" in next(iter(out["errors"].values()))


def test_onboarding_dag_is_one_task_by_default() -> None:
    dag = parse(DAGS / "realtime")["dags"]["onboarding"]
    # One task runs enrich -> score -> decide -> publish: a scheduling round per run, not four.
    assert list(dag["tasks"]) == ["decide"]
    assert dag["tasks"]["decide"]["retries"] == 2
    assert {"event_id", "user_id", "occurred_at", "application", "schema_version"} <= set(dag["params"])
    assert dag["schedule"] == "None"
    assert dag["paused"] is False


def test_onboarding_dag_stepwise_shape() -> None:
    dag = parse(DAGS / "realtime", ONBOARDING_DAG_SHAPE="stepwise")["dags"]["onboarding"]
    tasks = dag["tasks"]
    assert tasks["enrich"]["upstream"] == []
    assert tasks["score"]["upstream"] == ["enrich"]
    assert tasks["decide"]["upstream"] == ["score"]
    assert tasks["publish"]["upstream"] == ["decide"]
    # publish answers the applicant even when an upstream stage failed
    assert tasks["publish"]["trigger_rule"] == "all_done"
    assert {"event_id", "user_id", "occurred_at", "application", "schema_version"} <= set(dag["params"])
    # started runs finish before new ones start: later stages get the higher priority
    assert {t["weight_rule"] for t in tasks.values()} == {"upstream"}
    assert dag["schedule"] == "None"
    assert dag["paused"] is False


def test_batch_dags_import_without_errors_or_io() -> None:
    out = parse(DAGS / "batch")
    assert out["errors"] == {}
    assert set(out["dags"]) == {"risk_model_retrain", "risk_drift"}
    retrain = out["dags"]["risk_model_retrain"]["tasks"]
    assert retrain["gate_and_promote"]["upstream"] == ["train_challenger"]
    assert out["dags"]["risk_model_retrain"]["schedule"] != "None"


def test_no_dag_runs_on_both_instances() -> None:
    realtime = set(parse(DAGS / "realtime")["dags"])
    batch = set(parse(DAGS / "batch")["dags"])
    assert realtime == {"onboarding"}
    assert not realtime & batch
