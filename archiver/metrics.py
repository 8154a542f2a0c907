"""Metrics for on-call, read from the archive store's run manifests (the record of every run).

A cron job lives for minutes, so instead of a process that must be scraped while it runs,
the manifests are the source: `onboarding-archive serve-metrics` exposes them on /metrics
and /healthz, and every run also writes them to `<ARCHIVE_DIR>/metrics.prom` for a
node-exporter textfile collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class StoreCollector(Collector):
    def __init__(self, store: ArchiveStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        last_success = GaugeMetricFamily(
            "onboarding_archive_last_success_timestamp_seconds",
            "Unix time the last successful archive run of an instance finished.",
            labels=["instance"],
        )
        last_failed = GaugeMetricFamily(
            "onboarding_archive_last_run_failed",
            "1 if the latest archive run of an instance failed.",
            labels=["instance"],
        )
        duration = GaugeMetricFamily(
            "onboarding_archive_last_run_duration_seconds", "Duration of the latest archive run.", labels=["instance"]
        )
        last_rows = GaugeMetricFamily(
            "onboarding_archive_last_run_rows",
            "Rows archived by the latest run, per table.",
            labels=["instance", "table"],
        )
        rows_total = CounterMetricFamily(
            "onboarding_archive_rows",
            "Rows archived (and deleted from the database), per table.",
            labels=["instance", "table"],
        )
        runs_total = CounterMetricFamily(
            "onboarding_archive_runs", "Archive runs, by outcome (ok, failed).", labels=["instance", "status"]
        )
        for instance in self.store.instances():
            manifests = [m for m in self.store.run_manifests(instance) if not m.get("dry_run")]
            if not manifests:
                continue
            statuses: dict[str, int] = {"ok": 0, "failed": 0}
            totals: dict[str, int] = {}
            for manifest in manifests:
                statuses[manifest["status"]] = statuses.get(manifest["status"], 0) + 1
                for table, entry in manifest["tables"].items():
                    totals[table] = totals.get(table, 0) + entry["rows"]
            latest = manifests[-1]
            ok = [m for m in manifests if m["status"] == "ok"]
            if ok:
                last_success.add_metric([instance], _timestamp(ok[-1]["finished_at"]))
            last_failed.add_metric([instance], 1.0 if latest["status"] == "failed" else 0.0)
            duration.add_metric([instance], latest["duration_s"])
            for table, entry in latest["tables"].items():
                last_rows.add_metric([instance, table], entry["rows"])
            for table, rows in totals.items():
                rows_total.add_metric([instance, table], rows)
            for status, count in statuses.items():
                runs_total.add_metric([instance, status], count)
        yield from (last_success, last_failed, duration, last_rows, rows_total, runs_total)


def registry_for(store: ArchiveStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return registry


def write_textfile(store: ArchiveStore) -> Path:
    path = store.root / "metrics.prom"
    store.root.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_for(store))
    return path


def health(store: ArchiveStore, settings: ArchiveSettings, now: float | None = None) -> tuple[bool, str]:
    """Healthy when every configured instance's latest run succeeded within max_age_days."""
    now = time.time() if now is None else now
    problems = []
    for instance in settings.instances:
        manifests = [m for m in store.run_manifests(instance.name) if not m.get("dry_run")]
        ok = [m for m in manifests if m["status"] == "ok"]
        if manifests and manifests[-1]["status"] == "failed":
            problems.append(f"{instance.name}: last run failed: {manifests[-1].get('error')}")
        elif not ok:
            problems.append(f"{instance.name}: no successful archive run yet")
        elif now - _timestamp(ok[-1]["finished_at"]) > settings.max_age_days * 86400:
            problems.append(f"{instance.name}: last successful run {ok[-1]['finished_at']} is too old")
    return (not problems, "; ".join(problems) or "ok")
