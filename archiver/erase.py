"""Erase one user's archived runs: rewrite the Parquet files that hold them, keep the journal true.

A user's runs are found as `onboarding-archive audit` finds them (the run's `conf` is the
signup); every row that belongs to one of them goes: rows with the run's (dag_id, run_id),
rows that reference the run by its database id (`dag_run_id`) or one of its task instances
(`ti_id`). Each rewritten file is written to a temporary name and renamed (a reader sees the
old or the new file), then the batch's journal entry gets the file's new row count and
sha256, so `verify` still holds. Run manifests are left as they were: they record what a
past run moved, not what the archive holds now; the erasure itself is recorded (without the
user id, which would defeat it) under `<instance>/_erasures/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.audit import find_runs
from archiver.live_erase import names_user
from archiver.store import ArchiveStore, _write_atomic, parquet_bytes
from onboarding.keys import ONBOARDING_DAG_ID


@dataclass
class ArchiveErasure:
    """What was (or, in a dry run, would be) removed from the archive."""

    runs: list[str] = field(default_factory=list)  # "<instance>/<dag_id>/<run_id>"
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed
    files: list[str] = field(default_factory=list)  # rewritten files, relative to the archive


def _names_user_in(data: pa.Table, user_id: str) -> pa.Array | None:
    """Audit-log rows whose `extra` names the user (the trigger's request body holds the conf)."""
    if "extra" not in data.column_names:
        return None
    needle = f'"user_id": {json.dumps(user_id)}'
    hits = []
    for extra in data["extra"].to_pylist():
        hit = False
        if isinstance(extra, str) and needle in extra:
            try:
                hit = names_user(json.loads(extra), user_id)
            except ValueError:
                hit = False
        hits.append(hit)
    return pa.array(hits, type=pa.bool_())


def _mask(
    data: pa.Table,
    keys: set[tuple[str, str]],
    dag_run_ids: list[int],
    ti_ids: list[str],
    user_rows: pa.Array | None = None,
) -> pa.Array | None:
    """Rows of `data` that belong to the user's runs (None if the table cannot reference them)."""
    names = set(data.column_names)
    parts = [] if user_rows is None else [user_rows]
    if "run_id" in names and keys:
        hit = pc.is_in(data["run_id"], value_set=pa.array(sorted({r for _, r in keys})))
        if "dag_id" in names:
            hit = pc.and_(hit, pc.is_in(data["dag_id"], value_set=pa.array(sorted({d for d, _ in keys}))))
        parts.append(hit)
    if "dag_run_id" in names and dag_run_ids:
        parts.append(pc.is_in(data["dag_run_id"], value_set=pa.array(dag_run_ids, type=data["dag_run_id"].type)))
    if "ti_id" in names and ti_ids:
        parts.append(pc.is_in(data["ti_id"], value_set=pa.array(ti_ids, type=data["ti_id"].type)))
    if not parts:
        return None
    mask = parts[0]
    for part in parts[1:]:
        mask = pc.or_(mask, part)
    return pc.fill_null(mask, False)


def _ids(data: pa.Table | None, keys: set[tuple[str, str]], column: str) -> list:
    if data is None or column not in data.column_names:
        return []
    rows = data.select(["dag_id", "run_id", column]).to_pylist()
    return sorted({r[column] for r in rows if (r["dag_id"], r["run_id"]) in keys and r[column] is not None})


def erase_user(store: ArchiveStore, user_id: str, dry_run: bool = False, run_ids: Iterable[str] = ()) -> ArchiveErasure:
    """Remove every archived row of the user's runs (or only count them, with `dry_run`).

    The runs are those whose archived `conf` names the user, and `run_ids` (onboarding runs
    the caller knows are the user's: their rows may be archived while the run itself is not,
    e.g. a trigger's audit-log row archived a week before its run ended); archived audit-log
    rows whose `extra` names the user go too."""
    report = ArchiveErasure()
    found = find_runs(store, user_id=user_id)
    known = {(ONBOARDING_DAG_ID, r) for r in run_ids}
    for instance in sorted({f["instance"] for f in found} | set(store.instances())):
        keys = {(f["dag_id"], f["run_id"]) for f in found if f["instance"] == instance}
        report.runs.extend(f"{instance}/{d}/{r}" for d, r in sorted(keys))
        keys |= known
        dag_run_ids = _ids(store.read_table(instance, "dag_run"), keys, "id")
        ti_ids = _ids(store.read_table(instance, "task_instance"), keys, "id")
        changed: dict[str, tuple[int, str]] = {}  # relative path -> (rows left, checksum)
        for path in sorted(store.instance_dir(instance).glob("*/week=*/*.parquet")):
            data = pq.read_table(path)
            table = path.parent.parent.name
            user_rows = _names_user_in(data, user_id) if table == "log" else None
            mask = _mask(data, keys, dag_run_ids, ti_ids, user_rows)
            if mask is None:
                continue
            removed = pc.sum(mask).as_py() or 0
            if not removed:
                continue
            report.rows[table] = report.rows.get(table, 0) + removed
            relative = str(path.relative_to(store.instance_dir(instance)))
            report.files.append(f"{instance}/{relative}")
            if dry_run:
                continue
            kept = data.filter(pc.invert(mask))
            rewritten = parquet_bytes(kept)
            _write_atomic(path, rewritten)
            changed[relative] = (kept.num_rows, hashlib.sha256(rewritten).hexdigest())
        if changed:
            _update_journal(store, instance, changed)
            _record(store, instance, report)
    return report


def _update_journal(store: ArchiveStore, instance: str, changed: dict[str, tuple[int, str]]) -> None:
    for record in store.batches(instance):
        touched = False
        for entry in record.files.values():
            if entry.path in changed:
                entry.rows, entry.sha256 = changed[entry.path]
                touched = True
        if touched:
            store.save_batch(instance, record)


def _record(store: ArchiveStore, instance: str, report: ArchiveErasure) -> Path:
    now = datetime.now(UTC)
    path = store.instance_dir(instance) / "_erasures" / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    entry = {
        "erased_at": now.isoformat(),
        "runs": len(report.runs),
        "rows": report.rows,
    }
    _write_atomic(path, json.dumps(entry, indent=2).encode())
    return path
