"""Shadow scoring on the SLA page: how a challenger scored on live traffic beside the champion.

The onboarding task scores the version named by SHADOW_MODEL_VERSION beside the champion and
writes both into the decision record (airflow_adapter/tasks.py, risk/evidence.py); the
challenger's decision is never published. The page reads the newest `SHADOW_PAGE_RECORDS`
records (XREVRANGE of `<decisions>:records`, read-only) and shows, per challenger version:
how many were shadow-scored, how often both decided the same, each side's approve / review /
decline rates and their difference, the shadow's failures, and its scoring time (p50, p99).
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from onboarding import keys
from onboarding.streams import live_entries, text

logger = logging.getLogger(__name__)

SHADOW_PAGE_RECORDS = 1000
DECISIONS = ("approve", "review", "decline")


@dataclass(frozen=True)
class ShadowFigures:
    """One challenger version's figures over the records read."""

    version: str
    scored: int
    failed: int
    agreement: float | None
    champion_rates: dict[str, float]
    shadow_rates: dict[str, float]
    p50_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "rate_difference": {d: self.shadow_rates[d] - self.champion_rates[d] for d in DECISIONS},
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def shadow_view(client: redis.Redis, decisions_stream: str, last: int = SHADOW_PAGE_RECORDS) -> list[ShadowFigures]:
    """Per challenger version, its figures over the newest `last` decision records."""
    stream = keys.decision_records_stream(decisions_stream)
    by_version: dict[str, list[dict[str, Any]]] = {}
    for _entry_id, fields in live_entries(client.xrevrange(stream, count=last)):
        raw = {text(k): text(v) for k, v in fields.items()}.get("record")
        try:
            record: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            continue
        shadow = record.get("shadow")
        if shadow and shadow.get("version"):
            by_version.setdefault(shadow["version"], []).append(record)
    out = []
    for version, records in sorted(by_version.items()):
        scored = [r for r in records if "decision" in r["shadow"]]
        n = len(scored)
        champion = {d: sum(r["decision"] == d for r in scored) / n if n else 0.0 for d in DECISIONS}
        challenger = {d: sum(r["shadow"]["decision"] == d for r in scored) / n if n else 0.0 for d in DECISIONS}
        timings = [1000 * float(r["shadow"]["seconds"]) for r in scored if "seconds" in r["shadow"]]
        out.append(
            ShadowFigures(
                version=version,
                scored=n,
                failed=len(records) - n,
                agreement=sum(r["shadow"]["decision"] == r["decision"] for r in scored) / n if n else None,
                champion_rates=champion,
                shadow_rates=challenger,
                p50_ms=_pct(timings, 0.5),
                p99_ms=_pct(timings, 0.99),
            )
        )
    return out


def render_section(view: list[ShadowFigures] | None) -> str:
    """The page's "Shadow scoring" section (HTML)."""
    e = html.escape
    head = (
        '<h2>Shadow scoring</h2>\n<div class="sub">The challenger (SHADOW_MODEL_VERSION) scored beside the '
        f"champion on the newest {SHADOW_PAGE_RECORDS} decision records; its decisions are never published.</div>"
    )
    if view is None:
        return f'{head}\n<div class="sub" id="shadow">not read</div>'
    if not view:
        return f'{head}\n<div class="sub" id="shadow">no shadow-scored decisions</div>'
    rows = []
    for f in view:
        agreement = "n/a" if f.agreement is None else f"{f.agreement:.1%}"
        cells = "".join(
            f"<td>{f.champion_rates[d]:.1%} / {f.shadow_rates[d]:.1%} "
            f"({f.shadow_rates[d] - f.champion_rates[d]:+.1%})</td>"
            for d in DECISIONS
        )
        timing = "n/a" if f.p99_ms is None else f"{f.p50_ms:.2f} / {f.p99_ms:.2f} ms"
        rows.append(
            f"<tr><td>{e(f.version)}</td><td>{f.scored}</td><td>{f.failed}</td><td>{agreement}</td>{cells}"
            f"<td>{timing}</td></tr>"
        )
    return f"""{head}
<table id="shadow">
<tr><th>challenger</th><th>scored</th><th>failed</th><th>same decision</th>
<th>approve: champion / shadow (difference)</th><th>review</th><th>decline</th><th>shadow time p50 / p99</th></tr>
{chr(10).join(rows)}
</table>"""
