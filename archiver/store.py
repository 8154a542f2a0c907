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
from collections.abc import Iterable, Iterator, Mapping
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


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as the archive's Parquet file (zstd)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def rows_of(table: pa.Table) -> list[tuple]:
    """An Arrow table's rows as tuples, in order."""
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns, strict=True)) if table.num_rows else []


@dataclass
class TableFile:
    """One table's rows of one batch: where they are, how many, and the sha256 of the file."""

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
        # Not dataclasses.asdict: it deep-copies the (long) key list.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["files"] = {name: asdict(f) for name, f in self.files.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        files = {name: TableFile(**f) for name, f in data.pop("files", {}).items()}
        return cls(**data, files=files)


def _write_atomic(path: Path, data: bytes, sync_folder: bool = True) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the whole file or none. The
    folder is fsynced too unless the caller does it once for many files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if sync_folder:
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

    def write_batch(
        self, instance: str, week: str, batch_id: str, tables: Mapping[str, pa.Table], shapes: Mapping[str, Any]
    ) -> dict[str, TableFile]:
        """Write one batch's tables (one Parquet file each), make them durable, read them back and verify.

        Each file is written to a temporary name, fsynced and renamed; the folders are fsynced
        once per batch. Then each file is read back from disk: its sha256 is taken and its
        rows must equal, value for value, the rows read from the database.
        """
        files: dict[str, TableFile] = {}
        folders: set[Path] = set()
        for name, table in tables.items():
            relative = f"{name}/week={week}/{batch_id}.parquet"
            path = self.instance_dir(instance) / relative
            data = parquet_bytes(table)
            _write_atomic(path, data, sync_folder=False)
            folders.add(path.parent)
            files[name] = TableFile(name, relative, table.num_rows, hashlib.sha256(data).hexdigest())
        for folder in folders:
            _fsync_dir(folder)
        for name, entry in files.items():
            self.verify(self.instance_dir(instance) / entry.path, entry.rows, entry.sha256, tables[name])
        return files

    def holds(self, instance: str, record: BatchRecord, tables: Mapping[str, pa.Table]) -> bool:
        """Whether the batch's files (written by an earlier run) hold exactly these tables' rows."""
        if set(record.files) != set(tables):
            return False
        try:
            for name, entry in record.files.items():
                self.verify(self.instance_dir(instance) / entry.path, entry.rows, entry.sha256, tables[name])
        except VerificationError:
            return False
        return True

    def read_rows(self, path: Path) -> list[tuple]:
        """A file's rows as tuples (timestamps as timezone-aware datetimes)."""
        return rows_of(pq.read_table(path))

    def verify(self, path: Path, rows: int, sha256: str, expected: pa.Table | None = None) -> None:
        """Read a file back from disk; raise VerificationError unless it has this sha256 and row
        count and (when given) holds exactly the `expected` rows."""
        try:
            data = path.read_bytes()
            back = pq.read_table(pa.BufferReader(data))
        except (OSError, pa.ArrowException) as err:
            raise VerificationError(str(path), f"cannot read it back: {err}") from err
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise VerificationError(str(path), f"sha256 {got} read back, {sha256} written")
        if back.num_rows != rows:
            raise VerificationError(str(path), f"{back.num_rows} rows read back, {rows} written")
        if expected is not None and not back.equals(expected):
            raise VerificationError(str(path), "rows read back differ from the rows read from the database")

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
