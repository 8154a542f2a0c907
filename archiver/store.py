"""The archive store: Parquet files partitioned by instance, table and week, plus manifests.

    <ARCHIVE_DIR>/<instance>/<table>/week=<YYYY>-W<ww>/<batch_id>.parquet
    <ARCHIVE_DIR>/<instance>/_journal/<batch_id>.json     one per batch: keys, state, checksums
    <ARCHIVE_DIR>/<instance>/_runs/<started>.json         one per archive run (the run manifest)

Every file is written to a temporary name, flushed to disk and renamed, so a reader (or a
re-run after a crash) sees a whole file or none. A batch's files have fixed names, so
copying a batch again replaces them instead of adding a second copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.errors import VerificationError

# Column kinds: how a database value is kept in Parquet (and hashed).
ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),  # canonical JSON text: sorted keys, no spaces
    "binary": pa.binary(),
    "string": pa.string(),
}

BATCH_STATES = ("planned", "copied", "deleted", "dropped")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def checksum(rows: Iterable[Sequence[Any]]) -> str:
    """sha256 over one line per row, the `repr` of the row's tuple (the caller sorts by primary key).

    Rows hold the values as the archive keeps them: str, int, float, bool, bytes or None,
    timestamps as integer microseconds since the epoch (UTC), JSON as canonical text. So the
    rows read from the database and the rows read back from Parquet give the same lines.
    """
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(tuple(row)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class TableFile:
    """One table's rows of one batch: where they are, how many, and their checksum."""

    table: str
    path: str  # relative to the instance's folder
    rows: int
    sha256: str


@dataclass
class BatchRecord:
    """The journal entry of a batch; written before its files, updated before its delete."""

    batch_id: str
    root: str
    week: str
    keys: list[Any]
    cutoff: str
    state: str = "planned"
    files: dict[str, TableFile] = field(default_factory=dict)
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {name: asdict(f) for name, f in self.files.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        files = {name: TableFile(**f) for name, f in data.pop("files", {}).items()}
        return cls(**data, files=files)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArchiveStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def instance_dir(self, instance: str) -> Path:
        return self.root / instance

    def instances(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    # --- Parquet -----------------------------------------------------------------------

    def write_table(
        self, instance: str, table: str, week: str, batch_id: str, columns: Sequence[tuple[str, str]], rows: list[tuple]
    ) -> TableFile:
        """Write one batch's rows of one table, read the file back and verify it.

        `rows` are already sorted by primary key and converted to their kinds' Python types.
        """
        relative = f"{table}/week={week}/{batch_id}.parquet"
        path = self.instance_dir(instance) / relative
        expected = checksum(rows)
        schema = pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in columns])
        arrays = [pa.array([row[i] for row in rows], type=field.type) for i, field in enumerate(schema)]
        data = pa.Table.from_arrays(arrays, schema=schema)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(data, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        self.verify(path, len(rows), expected)
        return TableFile(table, relative, len(rows), expected)

    def read_rows(self, path: Path) -> list[tuple]:
        """A file's rows as tuples, timestamps as integer microseconds (as `checksum` expects)."""
        data = pq.read_table(path)
        columns = [
            (col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col).to_pylist() for col in data.columns
        ]
        return list(zip(*columns, strict=True)) if data.num_rows else []

    def verify(self, path: Path, rows: int, sha256: str) -> None:
        """Read a file back; raise VerificationError unless it holds exactly these rows."""
        try:
            back = self.read_rows(path)
        except (OSError, pa.ArrowException) as err:
            raise VerificationError(str(path), f"cannot read it back: {err}") from err
        if len(back) != rows:
            raise VerificationError(str(path), f"{len(back)} rows read back, {rows} written")
        got = checksum(back)
        if got != sha256:
            raise VerificationError(str(path), f"checksum {got} read back, {sha256} written")

    def verify_batch(self, instance: str, record: BatchRecord) -> None:
        for entry in record.files.values():
            self.verify(self.instance_dir(instance) / entry.path, entry.rows, entry.sha256)

    def remove_batch_files(self, instance: str, record: BatchRecord, keep: Iterable[str] = ()) -> None:
        """Remove files of this batch for tables not in `keep` (left over from an earlier copy)."""
        keep = set(keep)
        for path in self.instance_dir(instance).glob(f"*/week=*/{record.batch_id}.parquet"):
            if path.parent.parent.name not in keep:
                path.unlink()

    def table_files(self, instance: str, table: str) -> list[Path]:
        return sorted(self.instance_dir(instance).glob(f"{table}/week=*/*.parquet"))

    def read_table(self, instance: str, table: str, columns: list[str] | None = None) -> pa.Table | None:
        """All archived rows of one table of one instance, across weeks (None if there are none)."""
        files = self.table_files(instance, table)
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="permissive")

    # --- Journal and manifests -------------------------------------------------------------

    def _journal_path(self, instance: str, batch_id: str) -> Path:
        return self.instance_dir(instance) / "_journal" / f"{batch_id}.json"

    def save_batch(self, instance: str, record: BatchRecord) -> None:
        record.updated_at = datetime.now(UTC).isoformat()
        _write_atomic(self._journal_path(instance, record.batch_id), json.dumps(record.to_dict()).encode())

    def batches(self, instance: str) -> Iterator[BatchRecord]:
        for path in sorted((self.instance_dir(instance) / "_journal").glob("*.json")):
            yield BatchRecord.from_dict(json.loads(path.read_text()))

    def unfinished_batches(self, instance: str) -> list[BatchRecord]:
        return [b for b in self.batches(instance) if b.state in ("planned", "copied")]

    def write_run_manifest(self, instance: str, manifest: dict[str, Any]) -> Path:
        stamp = manifest["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        path = self.instance_dir(instance) / "_runs" / f"{stamp}.json"
        _write_atomic(path, json.dumps(manifest, indent=2).encode())
        return path

    def run_manifests(self, instance: str) -> list[dict[str, Any]]:
        """Every run manifest of an instance, oldest first."""
        paths = sorted((self.instance_dir(instance) / "_runs").glob("*.json"))
        return [json.loads(p.read_text()) for p in paths]
