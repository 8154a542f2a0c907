"""The audit query: a user's archived onboarding runs and their decision inputs, across weeks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.store import ArchiveStore
from onboarding.keys import DECISION_TASK_ID, run_id_for

# The XComs kept as decision inputs: the onboarding task's decided record; runs archived from
# the one-task-per-step shape also hold their enrich and score records.
DECISION_TASKS = ("enrich", "score", DECISION_TASK_ID)
DECISION_FIELDS = ("decision", "score", "reason_codes", "model_version")
TASK_INSTANCE_COLUMNS = ("task_id", "state", "try_number", "start_date", "end_date")


def _json(value: str | None) -> Any:
    if value is None:
        return None
    parsed = json.loads(value)
    # XCom values may be JSON text inside the JSON column (Airflow serialises before storing).
    if isinstance(parsed, str):
        try:
            return json.loads(parsed)
        except ValueError:
            return parsed
    return parsed


def _plain(row: dict[str, Any], json_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, bytes):
            value = value.hex()
        elif key in json_columns:
            value = _json(value)
        out[key] = value
    return out


def _rows_of(store: ArchiveStore, instance: str, table: str, runs: set[tuple[str, str]]) -> list[dict[str, Any]]:
    data = store.read_table(instance, table)
    if data is None or not runs:
        return []
    mask = pc.is_in(data["run_id"], value_set=pa.array(sorted({r for _, r in runs})))
    found = data.filter(mask).to_pylist()
    return [r for r in found if (r["dag_id"], r["run_id"]) in runs]


def find_runs(store: ArchiveStore, user_id: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
    """Archived onboarding runs of a user (by `user_id`) or of one signup (by `event_id`).

    Each result holds the DAG run (its `conf` is the signup event), its task instances and
    the XComs of enrich/score/decide (score, reason codes, model version, decision).
    """
    if not user_id and not event_id:
        raise ValueError("give a user id or an event id")
    results: list[dict[str, Any]] = []
    for instance in store.instances():
        results += _runs_in(store, instance, user_id, event_id)
    return results


def _runs_in(store: ArchiveStore, instance: str, user_id: str | None, event_id: str | None) -> list[dict[str, Any]]:
    """The matching runs of one instance, oldest first, each with its task instances and XComs."""
    runs = store.read_table(instance, "dag_run")
    if runs is None:
        return []
    candidates = [_plain(r, ("conf",)) for r in runs.filter(_candidates(runs, user_id, event_id)).to_pylist()]
    matched = [r for r in candidates if _is_match(r, user_id, event_id)]
    keys = {_run_key(r) for r in matched}
    tis = _rows_of(store, instance, "task_instance", keys)
    xcoms = _rows_of(store, instance, "xcom", keys)
    return [_result(instance, run, tis, xcoms) for run in sorted(matched, key=lambda r: r["run_after"] or "")]


def _candidates(runs: pa.Table, user_id: str | None, event_id: str | None) -> pa.ChunkedArray:
    """A mask of the dag_run rows that may match, cheap to compute on the whole table."""
    if event_id:
        return pc.equal(runs["run_id"], run_id_for(event_id))
    # conf is the JSON text the database held: a substring test narrows the scan (an id JSON
    # would escape is not narrowed), the parsed conf decides (`_is_match`).
    conf = pc.fill_null(runs["conf"], "")
    return pc.match_substring(conf, user_id) if user_id and _json_verbatim(user_id) else pc.is_valid(conf)


def _json_verbatim(text: str) -> bool:
    """Whether JSON writes `text` as it is (so a substring test on the JSON text finds it)."""
    return text.isascii() and text.isprintable() and not any(c in text for c in '"\\')


def _is_match(run: dict[str, Any], user_id: str | None, event_id: str | None) -> bool:
    """Whether a candidate run (conf parsed) is one of the user's, or the signup's."""
    if event_id and run["run_id"] == run_id_for(event_id):
        return True
    conf = run["conf"]
    if not isinstance(conf, dict):
        return False
    return conf.get("user_id") == user_id if user_id else conf.get("event_id") == event_id


def _run_key(row: dict[str, Any]) -> tuple[str, str]:
    return (row["dag_id"], row["run_id"])


def _result(
    instance: str, run: dict[str, Any], tis: list[dict[str, Any]], xcoms: list[dict[str, Any]]
) -> dict[str, Any]:
    """One audit result: the run, its signup, its decision and the steps that led to it."""
    key = _run_key(run)
    inputs = _decision_inputs(xcoms, key)
    decided = inputs.get(DECISION_TASK_ID) or {}
    return {
        "instance": instance,
        "dag_id": run["dag_id"],
        "run_id": run["run_id"],
        "state": run["state"],
        "run_after": run["run_after"],
        "end_date": run["end_date"],
        "signup": run["conf"],
        "decision": {k: decided.get(k) for k in DECISION_FIELDS if k in decided},
        "task_instances": _task_instances(tis, key),
        "decision_inputs": inputs,
    }


def _decision_inputs(xcoms: list[dict[str, Any]], key: tuple[str, str]) -> dict[str, Any]:
    """What each decision task of the run returned, by task id."""
    return {
        x["task_id"]: _json(x["value"])
        for x in xcoms
        if _run_key(x) == key and x["task_id"] in DECISION_TASKS and x["key"] == "return_value"
    }


def _task_instances(tis: list[dict[str, Any]], key: tuple[str, str]) -> list[dict[str, Any]]:
    """The run's task instances in the order they started, each with its audit columns."""
    ours = [t for t in tis if _run_key(t) == key]
    return [
        {k: v for k, v in _plain(t).items() if k in TASK_INSTANCE_COLUMNS}
        for t in sorted(ours, key=lambda t: str(t.get("start_date") or ""))
    ]
