"""Exact replay and backtests of recorded decisions (issue 29, item 2).

`replay` re-decides each recorded application (risk/evidence.py) with the model version the
record names (verified with the service's key: risk/integrity.py), through the same steps as
the task (`risk.steps.enrich`, `score`, `decide`), and reports every field that differs from
the record: the version's content hash, the features, the derived amount, the score, the
reasons, the policy thresholds and the decision. On the records the service wrote, with the
versions it used, there must be none.

`backtest` scores the same applications with a challenger version: its approve / review /
decline rates beside the champion's (the recorded decisions), how often they agree, the
expected cost per applicant and the approval rate by age band with its disparate-impact
ratio (risk/fairness.py). Past traffic has no outcomes (nobody knows yet who repays), so the
cost is the expected one under each model's own probability of bad
(approve: p x bad-approved cost, decline: (1 - p) x good-declined cost, review: the review
cost), and fairness is the decision rates by group, not the equal-opportunity difference.

Records are read from Redis (`<decisions>:records`) and from archive files
(`_records/decision_records/.../*.parquet`, archiver/decision_records.py), each once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from onboarding import keys
from onboarding.streams import live_entries, text
from risk.artifacts import LoadedModel, load_model
from risk.errors import ModelError
from risk.evidence import features_of, jsonable
from risk.fairness import FOUR_FIFTHS, age_band
from risk.integrity import Verifier
from risk.policy import CostMatrix, Decision

__all__ = ["Backtest", "Difference", "ReplayReport", "backtest", "read_records", "replay"]

DECISIONS = ("approve", "review", "decline")
RECORDED = ("features", "derived", "score", "reason_codes", "policy", "decision")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Difference:
    event_id: str
    field: str
    recorded: Any
    replayed: Any

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "field": self.field, "recorded": self.recorded, "replayed": self.replayed}


@dataclass
class ReplayReport:
    records: int = 0
    replayed: int = 0
    not_replayable: int = 0  # answered `review` because the pipeline failed: nothing was scored
    differences: list[Difference] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "replayed": self.replayed,
            "not_replayable": self.not_replayable,
            "differences": len(self.differences),
            "versions": self.versions,
            "first_differences": [d.to_dict() for d in self.differences[:50]],
        }


# -- reading --------------------------------------------------------------------------------


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def read_records(
    client: redis.Redis | None,
    decisions_stream: str,
    archive: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """The decision records decided in [since, until), from archive files (a file or a folder
    searched for `decision_records` Parquet files) and Redis, each once, oldest first."""
    low = int(since.timestamp() * 1000) if since else 0
    high = int(until.timestamp() * 1000) if until else None
    rows: dict[str, str] = {}
    if archive is not None:
        for entry_id, record in _archived(archive):
            rows[entry_id] = record
    if client is not None:
        stream = keys.decision_records_stream(decisions_stream)
        start, end = (f"{low}-0" if low else "-"), (f"({high}-0" if high is not None else "+")
        while True:
            entries = live_entries(client.xrange(stream, min=start, max=end, count=1000))
            if not entries:
                break
            for entry_id, fields in entries:
                data = {text(k): text(v) for k, v in fields.items()}
                rows[entry_id] = data.get("record", "")
            start = f"({entries[-1][0]}"
    out = []
    for entry_id in sorted(rows, key=_id_key):
        ms = _entry_ms(entry_id)
        if ms < low or (high is not None and ms >= high) or not rows[entry_id]:
            continue
        out.append(json.loads(rows[entry_id]))
    return out


def _archived(archive: Path) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # the model image without the archive's library
        raise ModelError("reading archived records needs pyarrow (the service extra)") from err
    files = [archive] if archive.is_file() else sorted(archive.rglob("decision_records/week=*/*.parquet"))
    for path in files:
        for row in pq.read_table(path, columns=["entry_id", "record"]).to_pylist():
            yield row["entry_id"], row["record"]


# -- replay ---------------------------------------------------------------------------------


class _Models:
    """Model versions loaded once each, verified with the service's key."""

    def __init__(self, model_dir: Path, verifier: Verifier | None) -> None:
        self.model_dir = model_dir
        self.verifier = verifier
        self._loaded: dict[str, LoadedModel] = {}

    def get(self, version: str) -> LoadedModel:
        if version not in self._loaded:
            self._loaded[version] = load_model(self.model_dir, version, verifier=self.verifier)
        return self._loaded[version]


def _redecide(record: dict[str, Any], model: LoadedModel) -> dict[str, Any]:
    """The recorded application decided again by `model`, through the task's steps."""
    from risk import steps

    signup = record["inputs"]
    enriched = steps.enrich(signup, signup.get("accepted_at"), record["timestamps"].get("run_started_at", ""))
    decided = steps.decide(steps.score(enriched, model))
    return {
        "model.content_sha256": model.content_hash,
        "features": features_of(model, decided.application),
        "derived": {"monthly_amount": decided.monthly_amount},
        "score": decided.score,
        "reason_codes": jsonable([r.to_dict() for r in decided.reason_codes]),
        "policy": decided.policy.to_dict(),
        "decision": decided.decision.value,
    }


def replay(
    records: Iterable[dict[str, Any]],
    model_dir: Path,
    verifier: Verifier | None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-decide each record with its recorded model version; every differing field is reported."""
    items = list(records)
    report = ReplayReport(records=len(items))
    models = _Models(model_dir, verifier)
    for n, record in enumerate(items, 1):
        if progress and (n % 100 == 0 or n == len(items)):
            progress(n, len(items))
        if not record.get("model"):
            report.not_replayable += 1
            continue
        version = record["model"]["version"]
        report.versions[version] = report.versions.get(version, 0) + 1
        try:
            again = _redecide(record, models.get(version))
        except ModelError as err:
            report.differences.append(Difference(record["event_id"], "model", version, str(err)))
            continue
        recorded = {
            "model.content_sha256": record["model"].get("content_sha256"),
            **{name: record.get(name) for name in RECORDED},
        }
        for name, value in again.items():
            if recorded[name] != value:
                report.differences.append(Difference(record["event_id"], name, recorded[name], value))
        report.replayed += 1
    return report


# -- backtest -------------------------------------------------------------------------------


@dataclass
class Backtest:
    challenger: str
    n: int
    champion_rates: dict[str, float]
    challenger_rates: dict[str, float]
    agreement: float
    champion_cost: float
    challenger_cost: float
    age_bands: dict[str, dict[str, Any]]  # band -> n, champion / challenger approval rate
    disparate_impact: dict[str, float]  # champion, challenger: min/max approval rate by age band
    champion_versions: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def markdown(self) -> str:
        lines = [
            f"Backtest of `{self.challenger}` on {self.n} recorded decisions "
            f"(champion: {', '.join(f'`{v}` ({k})' for v, k in self.champion_versions.items())}).",
            "",
            "| | approve | review | decline | expected cost per applicant | disparate impact (age band) |",
            "|---|---|---|---|---|---|",
        ]
        for name, rates, cost, di in (
            ("champion (recorded)", self.champion_rates, self.champion_cost, self.disparate_impact["champion"]),
            ("challenger", self.challenger_rates, self.challenger_cost, self.disparate_impact["challenger"]),
        ):
            flag = " (< 0.8)" if di < FOUR_FIFTHS else ""
            lines.append(
                f"| {name} | {rates['approve']:.3f} | {rates['review']:.3f} | {rates['decline']:.3f} "
                f"| {cost:.4f} | {di:.3f}{flag} |"
            )
        lines += [
            "",
            f"Same decision on {self.agreement:.1%} of applicants.",
            "",
            "| age band | n | champion approval rate | challenger approval rate |",
            "|---|---|---|---|",
        ]
        for band, row in self.age_bands.items():
            lines.append(f"| {band} | {row['n']} | {row['champion']:.3f} | {row['challenger']:.3f} |")
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        x = range(len(DECISIONS))
        width = 0.38
        left.bar([i - width / 2 for i in x], [self.champion_rates[d] for d in DECISIONS], width, label="champion")
        left.bar([i + width / 2 for i in x], [self.challenger_rates[d] for d in DECISIONS], width, label="challenger")
        left.set_xticks(list(x), list(DECISIONS))
        left.set_ylabel("share of applicants")
        left.set_title(f"Decisions on {self.n} recorded applicants")
        left.legend()
        bands = list(self.age_bands)
        y = range(len(bands))
        right.bar([i - width / 2 for i in y], [self.age_bands[b]["champion"] for b in bands], width, label="champion")
        right.bar(
            [i + width / 2 for i in y], [self.age_bands[b]["challenger"] for b in bands], width, label="challenger"
        )
        right.set_xticks(list(y), bands)
        right.set_ylabel("approval rate")
        right.set_title("Approval rate by age band")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _expected_cost(decision: str, p_bad: float, costs: CostMatrix) -> float:
    if decision == Decision.APPROVE.value:
        return p_bad * costs.bad_approved_cost
    if decision == Decision.DECLINE.value:
        return (1 - p_bad) * costs.good_declined_cost
    return costs.review_cost


def backtest(
    records: Iterable[dict[str, Any]],
    model_dir: Path,
    challenger: str,
    verifier: Verifier | None,
    costs: CostMatrix,
    progress: Progress | None = None,
) -> Backtest:
    """The challenger's decisions on the recorded applications beside the recorded ones."""
    from risk.model import probability_bad

    scored = [r for r in records if r.get("model") and r.get("score") is not None]
    model = load_model(model_dir, challenger, verifier=verifier)
    champion_rates = dict.fromkeys(DECISIONS, 0.0)
    challenger_rates = dict.fromkeys(DECISIONS, 0.0)
    agree = 0
    champion_cost = challenger_cost = 0.0
    bands: dict[str, dict[str, Any]] = {}
    versions: dict[str, int] = {}
    for n, record in enumerate(scored, 1):
        if progress and (n % 100 == 0 or n == len(scored)):
            progress(n, len(scored))
        application = record["inputs"]["application"]
        p_new = round(probability_bad(model.scorer, application), 6)
        new = model.policy.decide(p_new).value
        old = record["decision"]
        versions[record["model"]["version"]] = versions.get(record["model"]["version"], 0) + 1
        champion_rates[old] += 1
        challenger_rates[new] += 1
        agree += old == new
        champion_cost += _expected_cost(old, float(record["score"]), costs)
        challenger_cost += _expected_cost(new, p_new, costs)
        band = bands.setdefault(age_band(float(application["age_years"])), {"n": 0, "champion": 0, "challenger": 0})
        band["n"] += 1
        band["champion"] += old == "approve"
        band["challenger"] += new == "approve"
    total = len(scored) or 1
    order = ["under 25", "25-34", "35-49", "50 and over"]
    age_bands = {
        b: {"n": row["n"], "champion": row["champion"] / row["n"], "challenger": row["challenger"] / row["n"]}
        for b in order
        if (row := bands.get(b))
    }

    def impact(who: str) -> float:
        rates = [row[who] for row in age_bands.values()]
        return min(rates) / max(rates) if rates and max(rates) > 0 else 1.0

    return Backtest(
        challenger=challenger,
        n=len(scored),
        champion_rates={d: v / total for d, v in champion_rates.items()},
        challenger_rates={d: v / total for d, v in challenger_rates.items()},
        agreement=agree / total,
        champion_cost=champion_cost / total,
        challenger_cost=challenger_cost / total,
        age_bands=age_bands,
        disparate_impact={"champion": impact("champion"), "challenger": impact("challenger")},
        champion_versions=versions,
    )
