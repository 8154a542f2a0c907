"""A capacity model from a latency run: cores per component at 10, 100 and 1,000 signups/s.

    python benchmarks/capacity.py docs/benchmarks/capacity-latency.json [--variant tuned@postgres]
                                  [--rates 10,100,1000] [--headroom 0.7] [--out FILE.md]

Reads what `benchmarks/latency.py` measured for one variant (all its rounds):
  - marginal CPU seconds per decision of each component, from the burst phase (the machine
    saturated, every process busy with decisions: what one more decision costs);
  - the fixed CPU of each component (what it burns whatever the rate: polling loops,
    heartbeats), from the sustained phase: its cores there minus rate x marginal cost;
  - Redis commands and PostgreSQL transactions and rows per decision (the work counters).
Then it projects, linearly, cores(R) = fixed + R x marginal / headroom for each component
and deployment shape, and where a single process runs out (a component that cannot use
more than one core: the scheduler's main loop, Redis). Every figure it prints says whether
it was measured (by the run the JSON came from) or is projected (this arithmetic).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Component (as latency.py names it) -> how it scales.
SCALES = {
    "realtime scheduler": "one process per scheduler: at most one core each (Python, one thread does the loop)",
    "realtime tasks": "LocalExecutor: processes on the scheduler's host; CeleryExecutor: the worker pods",
    "realtime api-server": "stateless: more workers and replicas",
    "airflow api-server": "stateless: more workers and replicas (both instances' api-servers, not told apart)",
    "postgres": "one primary: more cores, up to its row-lock and WAL limits",
    "listener": "more listener replicas in the consumer group",
    "redis": "one thread: at most one core",
}
PER_DECISION = tuple(SCALES)


@dataclass(frozen=True)
class Measured:
    variant: str
    rounds: int
    rate: float
    marginal: dict[str, float]  # CPU s per decision, burst
    fixed: dict[str, float]  # cores, whatever the rate
    work: dict[str, float]  # per decision, burst
    burst_throughput: list[float]
    sustained_cpu_per_decision: list[float]
    burst_cpu_per_decision: list[float]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0


def measured(report: dict[str, Any], variant: str) -> Measured:
    rows = [r for r in report["results"] if r["variant"].split(" #")[0] == variant]
    if not rows:
        names = sorted({r["variant"].split(" #")[0] for r in report["results"]})
        raise SystemExit(f"no results for variant {variant!r} in the report; it has {', '.join(names)}")
    missing = [r["variant"] for r in rows if "by_component_cpu_s_per_decision" not in r.get("burst", {}).get("cpu", {})]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: no per-component CPU per decision (run latency.py again)")
    rate = float(report["args"]["rate"])
    components = sorted({c for r in rows for p in ("burst", "sustained") for c in r[p]["cpu"]["by_component_cores"]})
    marginal = {
        c: _mean(r["burst"]["cpu"]["by_component_cpu_s_per_decision"].get(c, 0.0) for r in rows) for c in components
    }
    fixed = {
        c: max(0.0, _mean(r["sustained"]["cpu"]["by_component_cores"].get(c, 0.0) for r in rows) - rate * marginal[c])
        for c in components
    }
    work_keys = sorted({k for r in rows for k in r["burst"].get("work_per_decision", {})})
    work = {
        k: _mean(r["burst"]["work_per_decision"][k] for r in rows if r["burst"]["work_per_decision"].get(k) is not None)
        for k in work_keys
    }
    return Measured(
        variant=variant,
        rounds=len(rows),
        rate=rate,
        marginal=marginal,
        fixed=fixed,
        work=work,
        burst_throughput=[r["burst"]["throughput_per_s"] for r in rows],
        sustained_cpu_per_decision=[r["sustained"]["cpu"]["variant_cpu_s_per_decision"] for r in rows],
        burst_cpu_per_decision=[r["burst"]["cpu"]["variant_cpu_s_per_decision"] for r in rows],
    )


def _cores(m: Measured, components: Iterable[str], rate: float, headroom: float) -> float:
    return sum(m.fixed.get(c, 0.0) + rate * m.marginal.get(c, 0.0) / headroom for c in components)


def render(m: Measured, rates: list[float], headroom: float, command: str, source: str) -> str:
    api = "realtime api-server" if "realtime api-server" in m.marginal else "airflow api-server"
    sched, tasks = "realtime scheduler", "realtime tasks"
    per_decision = [c for c in PER_DECISION if c in m.marginal]
    others = sorted(c for c in m.marginal if c not in per_decision)
    out = [
        f"Command: `{command}`, from `{source}` ({m.variant}, {m.rounds} round(s) of latency.py)",
        "",
        "**Measured** (per decision: the burst phase; fixed: the sustained phase at "
        f"{m.rate:g}/s minus that rate times the per-decision cost):",
        "",
        "| component | CPU s per decision | fixed cores | how it scales |",
        "|---|---|---|---|",
    ]
    for c in per_decision:
        out.append(f"| {c} | {m.marginal[c]:.4f} | {m.fixed[c]:.2f} | {SCALES[c]} |")
    rest_marginal = sum(m.marginal[c] for c in others)
    rest_fixed = sum(m.fixed[c] for c in others)
    out.append(
        f"| everything else ({', '.join(others)}) | {rest_marginal:.4f} | {rest_fixed:.2f} | not on the decision path |"
    )
    total = sum(m.marginal.values())
    out += [
        f"| **all** | **{total:.4f}** | {sum(m.fixed.values()):.2f} | |",
        "",
        f"Burst throughput of the run: {', '.join(f'{t:g}' for t in m.burst_throughput)} decisions/s; "
        f"variant CPU per decision: burst {', '.join(f'{v:g}' for v in m.burst_cpu_per_decision)} s, "
        f"sustained {', '.join(f'{v:g}' for v in m.sustained_cpu_per_decision)} s.",
    ]
    if m.work:
        out += [
            "Work per decision: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in m.work.items())
            + " (Redis: every client of the server, the benchmark's publisher and collector included).",
        ]
    sched_limit = headroom / m.marginal[sched] if m.marginal.get(sched) else math.inf
    redis_limit = headroom / m.marginal["redis"] if m.marginal.get("redis") else math.inf
    out += [
        "",
        f"**Projected** (cores = fixed + rate x CPU per decision / {headroom:g}, i.e. each core planned "
        f"at {headroom:.0%} busy; linear in the rate, which nothing here has measured beyond this machine):",
        "",
        f"- one scheduler runs out at about **{sched_limit:.0f} decisions/s** "
        f"({headroom:g} of a core / {m.marginal.get(sched, 0):.4f} s per decision);",
        f"- one Redis runs out at about **{redis_limit:.0f} decisions/s** on its CPU"
        + (f" ({m.work.get('redis_commands', 0):.0f} commands per decision)" if m.work.get("redis_commands") else "")
        + ";",
    ]
    if m.work.get("pg_transactions"):
        tx = m.work["pg_transactions"]
        per_rate = ", ".join(f"{r * tx:,.0f}" for r in rates)
        out.append(
            f"- PostgreSQL: {tx:.0f} transactions and {m.work.get('pg_rows_written', 0):.0f} row writes per "
            f"decision, so {per_rate} transactions/s at {', '.join(f'{r:g}' for r in rates)} decisions/s."
        )
    out += [
        "",
        "| signups/s | shape | schedulers | scheduler host(s): cores | api-server cores | Celery worker cores |"
        " PostgreSQL cores | Redis (one core) busy | listener cores | total cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        api_c = _cores(m, [api], rate, headroom)
        pg_c = _cores(m, ["postgres"], rate, headroom)
        redis_busy = rate * m.marginal.get("redis", 0.0)
        listen_c = _cores(m, ["listener"], rate, headroom)
        schedulers = max(1, math.ceil(rate / sched_limit))
        sched_c = schedulers * m.fixed.get(sched, 0.0) + rate * m.marginal.get(sched, 0.0) / headroom
        tasks_c = _cores(m, [tasks], rate, headroom)
        redis_txt = f"{redis_busy:.0%}" + (" (over: shard the streams)" if redis_busy > headroom else "")
        over = " (the scheduler over one core: cannot)" if rate > sched_limit else ""
        one_sched = m.fixed.get(sched, 0.0) + rate * m.marginal.get(sched, 0.0) / headroom
        # LocalExecutor: one scheduler with its task processes on its host. CeleryExecutor: the
        # task processes on the workers, with one scheduler or as many as their cores need.
        shapes = (
            ("LocalExecutor", 1, f"{one_sched + tasks_c:.1f}{over}", "-", one_sched + tasks_c),
            ("CeleryExecutor", 1, f"{one_sched:.1f}{over}", f"{tasks_c:.1f}", one_sched + tasks_c),
            ("CeleryExecutor, HA schedulers", schedulers, f"{sched_c:.1f}", f"{tasks_c:.1f}", sched_c + tasks_c),
        )
        for shape, n, host_txt, workers_txt, airflow_c in shapes:
            total = airflow_c + api_c + pg_c + listen_c + 1
            out.append(
                f"| {rate:g} | {shape} | {n} | {host_txt} | {api_c:.1f} | {workers_txt} | {pg_c:.1f} | {redis_txt}"
                f" | {listen_c:.2f} | {total:.0f} |"
            )
    out += [
        "",
        "Total cores count Redis as one core. Not in the model: the batch instance, rq and the SLA "
        "service (fixed, not per decision); PostgreSQL's lock contention between several schedulers "
        "(Airflow's HA schedulers take row locks with SKIP LOCKED, and how far that scales on one "
        "database is not measured here); network and disk.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a latency.json written by benchmarks/latency.py")
    parser.add_argument("--variant", default="tuned@postgres")
    parser.add_argument("--rates", default="10,100,1000")
    parser.add_argument("--headroom", type=float, default=0.7, help="plan each core at this fraction busy")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    m = measured(report, args.variant)
    rates = [float(r) for r in args.rates.split(",") if r]
    command = "python benchmarks/capacity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(m, rates, args.headroom, command.strip(), report.get("command", "?"))
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
