"""Exact replay and backtests of recorded decisions (issue 29, item 2)."""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from airflow_adapter import tasks
from onboarding import keys
from risk.artifacts import current_version, save_model
from risk.cli import main as model_cli
from risk.integrity import Signer
from risk.policy import CostMatrix, Policy
from risk.replay import backtest, read_records, replay
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL

DEV = Signer().verifier()


@pytest.fixture
def model_dir(trained_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_model_dir, tmp_path / "models"))


@pytest.fixture
def decided(redis_client: redis.Redis, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """40 decisions made by the task body, and their records."""
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("RISK_MODEL_DIR", str(model_dir))
    tasks.settings.cache_clear()
    rng = random.Random(29)
    for _ in range(40):
        signup = new_signup(rng=rng)
        tasks.decide_and_publish({**signup, "accepted_at": "2026-12-04T10:00:00+00:00"}, None, None)
    yield read_records(redis_client, keys.DECISIONS_STREAM)
    tasks.settings.cache_clear()


def test_replaying_the_recorded_decisions_finds_no_difference(decided: list[dict], model_dir: Path) -> None:
    report = replay(decided, model_dir, DEV)
    assert report.records == report.replayed == 40
    assert report.differences == []
    assert report.versions == {current_version(model_dir): 40}


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("score", lambda r: r.__setitem__("score", round(r["score"] + 0.01, 6))),
        ("decision", lambda r: r.__setitem__("decision", "approve" if r["decision"] != "approve" else "decline")),
        ("policy", lambda r: r["policy"].__setitem__("approve_max", 0.9)),
        ("features", lambda r: r["features"].__setitem__("duration_months", 99.0)),
        ("model.content_sha256", lambda r: r["model"].__setitem__("content_sha256", "0" * 64)),
    ],
)
def test_a_changed_record_is_reported(decided: list[dict], model_dir: Path, field: str, change) -> None:
    records = copy.deepcopy(decided)
    change(records[7])
    report = replay(records, model_dir, DEV)
    assert [(d.event_id, d.field) for d in report.differences] == [(records[7]["event_id"], field)]


def test_a_changed_application_is_reported_in_what_it_changes(decided: list[dict], model_dir: Path) -> None:
    records = copy.deepcopy(decided)
    records[3]["inputs"]["application"]["duration_months"] += 24  # not what was scored
    fields = {d.field for d in replay(records, model_dir, DEV).differences}
    assert {"features", "derived", "score"} <= fields


def test_backtest_of_a_challenger_reports_rates_agreement_cost_fairness_and_a_plot(
    decided: list[dict], model_dir: Path, tmp_path: Path
) -> None:
    from risk.artifacts import load_model

    champion = load_model(model_dir, current_version(model_dir))
    # The same trees with a policy that approves more: fewer declines, less agreement.
    strict = Policy(approve_max=champion.policy.approve_max + 0.2, decline_min=champion.policy.decline_min + 0.2)
    challenger = save_model(model_dir, champion.scorer, strict, "cd" * 32, {}, make_current=False)
    result = backtest(decided, model_dir, challenger, DEV, CostMatrix())
    assert result.n == 40
    counts = {d: sum(r["decision"] == d for r in decided) / 40 for d in ("approve", "review", "decline")}
    assert result.champion_rates == counts
    assert result.challenger_rates["approve"] >= result.champion_rates["approve"]
    assert result.challenger_rates != result.champion_rates and result.agreement < 1.0
    assert sum(row["n"] for row in result.age_bands.values()) == 40
    same = backtest(decided, model_dir, current_version(model_dir), DEV, CostMatrix())
    assert same.agreement == 1.0 and same.challenger_cost == pytest.approx(same.champion_cost)
    table = result.markdown()
    assert f"`{challenger}`" in table and "| challenger |" in table and "age band" in table
    result.plot(tmp_path / "backtest.png")
    assert (tmp_path / "backtest.png").read_bytes()[:4] == b"\x89PNG"


def test_the_replay_command_exits_0_on_the_records_and_1_on_a_difference(
    decided: list[dict], model_dir: Path, redis_client: redis.Redis, capsys
) -> None:
    assert model_cli(["replay"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replayed"] == 40 and out["differences"] == 0
    # Records are never changed in place; a forged one added next to them is found.
    forged = copy.deepcopy(decided[0]) | {"event_id": "forged", "score": 0.001}
    stream = keys.decision_records_stream(keys.DECISIONS_STREAM)
    redis_client.xadd(stream, {"event_id": "forged", "record": json.dumps(forged)})
    assert model_cli(["replay"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["differences"] == 1 and out["first_differences"][0]["event_id"] == "forged"
