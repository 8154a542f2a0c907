"""The built-in SLA page: one JSON snapshot of what on-call needs, and its HTML rendering.

The page is rendered on the server and refreshes itself; no frontend build, no JavaScript.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import redis

from archiver.store import ArchiveStore
from onboarding.awaiting import awaiting_count
from sla.metrics import _groups, overdue_now
from sla.observer import DecisionObserver, iter_latencies, percentile
from sla.overdue import OverdueDecision
from sla.settings import SlaSettings


def snapshot(
    client: redis.Redis,
    settings: SlaSettings,
    observer: DecisionObserver,
    overdue: Callable[[], list[OverdueDecision]],
    archive: ArchiveStore | None,
) -> dict[str, Any]:
    """Live figures over the page window (the observer's memory; Prometheus keeps the long view)."""
    items = observer.window.items()
    latencies = list(iter_latencies(items))
    within = sum(1 for value in latencies if value <= settings.slo_threshold_s)
    compliance = within / len(latencies) if latencies else None
    budget = 1 - settings.slo_target
    budget_left = None if compliance is None else max(0.0, 1 - (1 - compliance) / budget)
    by_decision: dict[str, int] = {}
    for item in items:
        by_decision[item.decision] = by_decision.get(item.decision, 0) + 1
    streams = settings.streams
    group = next((g for g in _groups(client, streams.signups_stream) if g.get("name") == settings.listener_group), {})
    overdue_count = len(overdue_now(client, settings))
    overdue_items = overdue()
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "window_s": settings.page_window_s,
        "slo": {"threshold_s": settings.slo_threshold_s, "target": settings.slo_target},
        "decisions": len(items),
        "decisions_per_min": round(len(items) / (settings.page_window_s / 60), 2),
        "by_decision": by_decision,
        "pipeline_failures": sum(1 for item in items if item.failed),
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
        },
        "within_slo_ratio": compliance,
        "error_budget_left_ratio": budget_left,
        "lag": {"lag": group.get("lag"), "pending": group.get("pending"), "group": settings.listener_group},
        "dead_letters": int(client.xlen(streams.dead_letter_stream)),
        "awaiting": awaiting_count(client, streams),
        "overdue_count": overdue_count,
        "overdue": [item.to_dict() for item in overdue_items],
        "archive": last_archive_runs(archive),
    }


def last_archive_runs(store: ArchiveStore | None) -> list[dict[str, Any]]:
    if store is None:
        return []
    out = []
    for instance in store.instances():
        manifests = [m for m in store.run_manifests(instance) if not m.get("dry_run")]
        if not manifests:
            continue
        latest = manifests[-1]
        ok = [m for m in manifests if m.get("status") == "ok"]
        out.append(
            {
                "instance": instance,
                "status": latest.get("status"),
                "finished_at": latest.get("finished_at"),
                "duration_s": latest.get("duration_s"),
                "rows": sum(entry.get("rows", 0) for entry in (latest.get("tables") or {}).values()),
                "last_success_at": ok[-1].get("finished_at") if ok else None,
            }
        )
    return out


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _fmt_pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def render(data: dict[str, Any], refresh_s: int = 10) -> str:
    e = html.escape
    slo = data["slo"]
    lat = data["latency_s"]
    compliance = data["within_slo_ratio"]
    ok = compliance is None or compliance >= slo["target"]
    budget = data["error_budget_left_ratio"]
    window_min = int(data["window_s"] // 60)
    cards = [
        ("p50", _fmt_s(lat["p50"]), "latency-p50"),
        ("p95", _fmt_s(lat["p95"]), "latency-p95"),
        ("p99", _fmt_s(lat["p99"]), "latency-p99"),
        (f"within {slo['threshold_s']:g} s (target {_fmt_pct(slo['target'], 1)})", _fmt_pct(compliance), "compliance"),
        ("error budget left", _fmt_pct(budget, 1), "budget-left"),
        ("decisions", str(data["decisions"]), "decisions"),
        ("listener lag / pending", f"{data['lag']['lag'] or 0} / {data['lag']['pending'] or 0}", "lag"),
        ("dead letters", str(data["dead_letters"]), "dead-letters"),
        ("awaiting decision", str(data["awaiting"]), "awaiting"),
        ("overdue", str(data["overdue_count"]), "overdue-count"),
    ]
    card_html = "\n".join(
        f'<div class="card"><div class="label">{e(label)}</div><div class="value" id="{key}">{e(value)}</div></div>'
        for label, value, key in cards
    )
    outcomes = ", ".join(f"{e(k)}: {v}" for k, v in sorted(data["by_decision"].items())) or "none yet"
    overdue_rows = (
        "\n".join(
            "<tr>"
            + "".join(f"<td>{e(str(item[k]))}</td>" for k in ("event_id", "accepted_at", "age_s", "stuck", "run_state"))
            + "</tr>"
            for item in data["overdue"]
        )
        or '<tr><td colspan="5">none</td></tr>'
    )
    archive_rows = (
        "\n".join(
            f"<tr><td>{e(a['instance'])}</td><td>{e(str(a['status']))}</td><td>{e(str(a['finished_at']))}</td>"
            f"<td>{e(str(a['rows']))}</td><td>{e(str(a['last_success_at']))}</td></tr>"
            for a in data["archive"]
        )
        or '<tr><td colspan="5">no archive run recorded</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_s}">
<title>Onboarding decisions SLA</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f7f9;color:#1d2330}}
h1{{font-size:1.4rem;margin:0 0 .3rem}} .sub{{color:#5a6272;margin-bottom:1rem}}
.status{{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;
background:{"#1f8a4c" if ok else "#c0392b"}}}
.cards{{display:grid;grid-template-columns:repeat(5,1fr);gap:.7rem;margin:1rem 0}}
.card{{background:#fff;border-radius:.4rem;padding:.7rem;box-shadow:0 1px 2px #0002}}
.label{{font-size:.8rem;color:#5a6272}} .value{{font-size:1.5rem;font-weight:600}}
table{{border-collapse:collapse;background:#fff;width:100%;margin-bottom:1rem}}
td,th{{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;font-size:.85rem}}
</style></head><body>
<h1>Onboarding decisions SLA <span class="status" id="slo-status">{"SLO met" if ok else "SLO missed"}</span></h1>
<div class="sub">Last {window_min} min of decisions, as of {e(data["generated_at"])}; refreshes every {refresh_s} s.
Outcomes: <span id="outcomes">{outcomes}</span>; pipeline failures: {data["pipeline_failures"]}.
JSON: <a href="/api/sla">/api/sla</a>, metrics: <a href="/metrics">/metrics</a>.</div>
<div class="cards">
{card_html}
</div>
<h2>Overdue decisions</h2>
<table id="overdue"><tr><th>event id</th><th>accepted</th><th>age (s)</th><th>stuck at</th><th>run state</th></tr>
{overdue_rows}
</table>
<h2>Last archive run</h2>
<table id="archive"><tr><th>instance</th><th>status</th><th>finished</th><th>rows</th><th>last success</th></tr>
{archive_rows}
</table>
</body></html>
"""
