"""The audit query: a user's archived onboarding runs and their decision inputs, across weeks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver.store import ArchiveStore
from onboarding.keys import run_id_for

DECISION_TASKS = ("enrich", "score", "decide")


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
        runs = store.read_table(instance, "dag_run")
        if runs is None:
            continue
        if event_id:
            mask = pc.equal(runs["run_id"], run_id_for(event_id))
        elif user_id:
            # conf is the JSON text the database held: a substring test narrows the scan (an
            # id JSON would escape is not narrowed), the parsed conf decides.
            plain = user_id.isascii() and user_id.isprintable() and not any(c in user_id for c in '"\\')
            conf = pc.fill_null(runs["conf"], "")
            mask = pc.match_substring(conf, user_id) if plain else pc.is_valid(conf)
        candidates = [_plain(r, ("conf",)) for r in runs.filter(mask).to_pylist()]
        matched = [
            r
            for r in candidates
            if (
                isinstance(r["conf"], dict)
                and (r["conf"].get("user_id") == user_id if user_id else r["conf"].get("event_id") == event_id)
            )
            or (event_id and r["run_id"] == run_id_for(event_id))
        ]
        keys = {(r["dag_id"], r["run_id"]) for r in matched}
        tis = _rows_of(store, instance, "task_instance", keys)
        xcoms = _rows_of(store, instance, "xcom", keys)
        for run in sorted(matched, key=lambda r: r["run_after"] or ""):
            key = (run["dag_id"], run["run_id"])
            inputs = {
                x["task_id"]: _json(x["value"])
                for x in xcoms
                if (x["dag_id"], x["run_id"]) == key and x["task_id"] in DECISION_TASKS and x["key"] == "return_value"
            }
            decided = inputs.get("decide") or {}
            results.append(
                {
                    "instance": instance,
                    "dag_id": run["dag_id"],
                    "run_id": run["run_id"],
                    "state": run["state"],
                    "run_after": run["run_after"],
                    "end_date": run["end_date"],
                    "signup": run["conf"],
                    "decision": {
                        k: decided.get(k)
                        for k in ("decision", "score", "reason_codes", "model_version")
                        if k in decided
                    },
                    "task_instances": [
                        {
                            k: v
                            for k, v in _plain(t).items()
                            if k in ("task_id", "state", "try_number", "start_date", "end_date")
                        }
                        for t in sorted(tis, key=lambda t: str(t.get("start_date") or ""))
                        if (t["dag_id"], t["run_id"]) == key
                    ],
                    "decision_inputs": inputs,
                }
            )
    return results
