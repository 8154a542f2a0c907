"""The built-in SLA page: one snapshot of what on-call needs (`sla.snapshot.Snapshot`), and
its HTML rendering.

The page is rendered on the server and refreshes itself; no frontend build, no JavaScript.
Its charts (sla/charts.py) plot exactly the `series` of the snapshot, which /api/sla returns
(`Snapshot.to_dict()`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

import redis

from archiver.store import ArchiveStore
from onboarding.awaiting import awaiting_count
from sla.charts import Line, svg_chart
from sla.metrics import _groups, overdue_now
from sla.observer import DecisionObserver
from sla.overdue import OverdueDecision
from sla.review import render_section, review_view
from sla.series import OUTCOMES, RANGES, percentile
from sla.settings import SlaSettings
from sla.shadow import render_section as render_shadow
from sla.shadow import shadow_view
from sla.snapshot import ArchiveRun, Lag, Latency, Slo, Snapshot


def snapshot(
    client: redis.Redis,
    settings: SlaSettings,
    observer: DecisionObserver,
    overdue: Callable[[], list[OverdueDecision]],
    archive: ArchiveStore | None,
) -> Snapshot:
    """Live figures over the page window and the charts' series of the last hour and day (the
    observer's per-minute aggregates; Prometheus keeps the long view)."""
    now = time.time()
    streams = settings.streams
    dead_letters = int(client.xlen(streams.dead_letter_stream))
    observer.series.sample_dead_letters(now, dead_letters)
    overdue_since = overdue_now(client, settings, now)
    since = [accepted + settings.overdue_after_s for _event_id, accepted in overdue_since]
    series = {name: observer.series.chart(now, span, step, since) for name, span, step in RANGES}
    end = series["1h"]["end"]  # the figures are the sums of the last hour's chart
    minutes = observer.series.minutes(end - settings.page_window_s, end)
    latencies = [value for minute in minutes for value in minute.latencies]
    decisions = sum(minute.decisions for minute in minutes)
    within = sum(1 for value in latencies if value <= settings.slo_threshold_s)
    compliance = within / len(latencies) if latencies else None
    budget = 1 - settings.slo_target
    budget_left = None if compliance is None else max(0.0, 1 - (1 - compliance) / budget)
    by_decision: dict[str, int] = {}
    for minute in minutes:
        for outcome, count in minute.outcomes.items():
            by_decision[outcome] = by_decision.get(outcome, 0) + count
    group = next((g for g in _groups(client, streams.signups_stream) if g.get("name") == settings.listener_group), {})
    return Snapshot(
        generated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        window_s=settings.page_window_s,
        slo=Slo(threshold_s=settings.slo_threshold_s, target=settings.slo_target),
        decisions=decisions,
        decisions_per_min=round(decisions / (settings.page_window_s / 60), 2),
        by_decision=by_decision,
        pipeline_failures=sum(minute.failures for minute in minutes),
        latency_s=Latency(p50=percentile(latencies, 50), p95=percentile(latencies, 95), p99=percentile(latencies, 99)),
        within_slo_ratio=compliance,
        error_budget_left_ratio=budget_left,
        lag=Lag(lag=group.get("lag"), pending=group.get("pending"), group=settings.listener_group),
        dead_letters=dead_letters,
        awaiting=awaiting_count(client, streams),
        overdue_count=len(overdue_since),
        overdue=tuple(overdue()),
        archive=last_archive_runs(archive),
        series=series,
        review=review_view(client, streams.decisions_stream, now),
        shadow=shadow_view(client, streams.decisions_stream),
    )


def last_archive_runs(store: ArchiveStore | None) -> tuple[ArchiveRun, ...]:
    if store is None:
        return ()
    out = []
    for instance in store.instances():
        manifests = [m for m in store.run_manifests(instance) if not m.get("dry_run")]
        if not manifests:
            continue
        latest = manifests[-1]
        ok = [m for m in manifests if m.get("status") == "ok"]
        out.append(
            ArchiveRun(
                instance=instance,
                status=latest.get("status"),
                finished_at=latest.get("finished_at"),
                duration_s=latest.get("duration_s"),
                rows=sum(entry.get("rows", 0) for entry in (latest.get("tables") or {}).values()),
                last_success_at=ok[-1].get("finished_at") if ok else None,
            )
        )
    return tuple(out)


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _fmt_pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def charts(data: Snapshot) -> str:
    """Both ranges side by side: latency against the threshold, outcomes, dead letters and overdue."""
    colours = {"approve": "#1f8a4c", "review": "#d68910", "decline": "#c0392b"}
    rows = []
    for title, unit, lines, threshold in (
        ("Latency signup → decision", "s", (("p50_s", "p50", "#2e6fd8"), ("p99_s", "p99", "#7d3c98")), True),
        ("Decisions per minute by outcome", "/min", tuple((o, o, colours[o]) for o in OUTCOMES), False),
        (
            "Dead letters (depth) and overdue decisions",
            "count",
            (("dead_letters", "dead letters", "#34495e"), ("overdue", "overdue", "#e67e22")),
            False,
        ),
    ):
        cells = []
        for name, _span, step in RANGES:
            chart = data.series[name]
            key = title.split()[0].lower()
            svg = svg_chart(
                f"chart-{key}-{name}",
                chart["t"],
                step,
                [Line(k, label, colour, chart[k]) for k, label, colour in lines],
                unit,
                data.slo.threshold_s if threshold else None,
                label_every_s=600 if name == "1h" else 3 * 3600,
            )
            cells.append(f'<div class="panel"><h3>{html.escape(title)}, last {name}</h3>{svg}</div>')
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    return "\n".join(rows)


def render(data: Snapshot, refresh_s: int = 10) -> str:
    e = html.escape
    slo = data.slo
    lat = data.latency_s
    compliance = data.within_slo_ratio
    ok = data.slo_met
    budget = data.error_budget_left_ratio
    window_min = int(data.window_s // 60)
    cards = [
        ("p50", _fmt_s(lat.p50), "latency-p50"),
        ("p95", _fmt_s(lat.p95), "latency-p95"),
        ("p99", _fmt_s(lat.p99), "latency-p99"),
        (f"within {slo.threshold_s:g} s (target {_fmt_pct(slo.target, 1)})", _fmt_pct(compliance), "compliance"),
        ("error budget left", _fmt_pct(budget, 1), "budget-left"),
        ("decisions", str(data.decisions), "decisions"),
        ("listener lag / pending", f"{data.lag.lag or 0} / {data.lag.pending or 0}", "lag"),
        ("dead letters", str(data.dead_letters), "dead-letters"),
        ("awaiting decision", str(data.awaiting), "awaiting"),
        ("overdue", str(data.overdue_count), "overdue-count"),
    ]
    card_html = "\n".join(
        f'<div class="card"><div class="label">{e(label)}</div><div class="value" id="{key}">{e(value)}</div></div>'
        for label, value, key in cards
    )
    outcomes = ", ".join(f"{e(k)}: {v}" for k, v in sorted(data.by_decision.items())) or "none yet"
    overdue_rows = (
        "\n".join(
            "<tr>"
            + "".join(f"<td>{e(str(item[k]))}</td>" for k in ("event_id", "accepted_at", "age_s", "stuck", "run_state"))
            + "</tr>"
            for item in (overdue.to_dict() for overdue in data.overdue)
        )
        or '<tr><td colspan="5">none</td></tr>'
    )
    archive_rows = (
        "\n".join(
            f"<tr><td>{e(a.instance)}</td><td>{e(str(a.status))}</td><td>{e(str(a.finished_at))}</td>"
            f"<td>{e(str(a.rows))}</td><td>{e(str(a.last_success_at))}</td></tr>"
            for a in data.archive
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
.row{{display:flex;gap:.7rem;margin-bottom:.7rem}}
.panel{{flex:1;min-width:0;background:#fff;border-radius:.4rem;padding:.5rem .7rem;box-shadow:0 1px 2px #0002}}
.panel h3{{font-size:.9rem;margin:0 0 .2rem}} .legend{{font-size:.75rem;color:#5a6272}}
.key{{margin-right:.8rem}} .key i{{display:inline-block;width:.8rem;height:.25rem;margin-right:.3rem;
vertical-align:middle}}
svg.chart{{display:block;width:100%;height:auto;font-size:10px}} .axis{{fill:#5a6272}}
.grid{{stroke:#e3e6eb}} .tick,.axis-line{{stroke:#9aa1ad}}
.threshold{{stroke:#c0392b;stroke-dasharray:6 4;stroke-width:1.2}} .threshold-label{{fill:#c0392b}}
</style></head><body>
<h1>Onboarding decisions SLA <span class="status" id="slo-status">{"SLO met" if ok else "SLO missed"}</span></h1>
<div class="sub">Last {window_min} min of decisions, as of {e(data.generated_at)}; refreshes every {refresh_s} s.
Outcomes: <span id="outcomes">{outcomes}</span>; pipeline failures: {data.pipeline_failures}.
JSON: <a href="/api/sla">/api/sla</a>, metrics: <a href="/metrics">/metrics</a>.</div>
<div class="cards">
{card_html}
</div>
<h2>Last hour and last 24 hours</h2>
<div class="sub">One point per minute (last hour) or per 10 minutes (24 h), UTC; the same series
as <code>series</code> in <a href="/api/sla">/api/sla</a>. Dead-letter depth is sampled by the running
service, so it starts at its last restart.</div>
{charts(data)}
{render_section(data.review)}
{render_shadow(data.shadow)}
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
