"""Shadow scoring (issue 29, item 3): a challenger scored in the same task on live traffic,
recorded beside the champion, never published; the SLA page shows agreement and rates."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from airflow_adapter import tasks
from onboarding import keys
from risk.artifacts import current_version, load_model, save_model
from risk.policy import Policy
from risk.replay import read_records
from risk.samples import new_signup
from sla.shadow import render_section, shadow_view
from tests.conftest import TEST_REDIS_URL


@pytest.fixture
def model_dir(trained_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_model_dir, tmp_path / "models"))


@pytest.fixture
def challenger(model_dir: Path) -> str:
    """The champion's trees with a policy that approves more (a challenger that disagrees)."""
    champion = load_model(model_dir, current_version(model_dir))
    policy = Policy(champion.policy.approve_max + 0.15, champion.policy.decline_min + 0.15)
    return save_model(model_dir, champion.scorer, policy, "ef" * 32, {}, make_current=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("RISK_MODEL_DIR", str(model_dir))
    tasks.settings.cache_clear()
    yield monkeypatch
    tasks.settings.cache_clear()


def decide(n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        signup = new_signup(rng=rng)
        tasks.decide_and_publish({**signup, "accepted_at": signup["occurred_at"]}, None, None)


def test_the_shadow_is_recorded_beside_the_champion_and_never_published(
    redis_client: redis.Redis, env: pytest.MonkeyPatch, model_dir: Path, challenger: str
) -> None:
    env.setenv("SHADOW_MODEL_VERSION", challenger)
    tasks.settings.cache_clear()
    decide(30)
    records = read_records(redis_client, keys.DECISIONS_STREAM)
    assert len(records) == 30
    champion = load_model(model_dir, current_version(model_dir))
    shadow_policy = load_model(model_dir, challenger).policy
    for record in records:
        shadow = record["shadow"]
        assert shadow["version"] == challenger and shadow["score"] == record["score"]  # the same trees
        assert shadow["decision"] == shadow_policy.decide(shadow["score"]).value
        assert record["decision"] == champion.policy.decide(record["score"]).value
        assert 0 < shadow["seconds"] < 1
    assert any(r["shadow"]["decision"] != r["decision"] for r in records)
    published = [fields[b"payload"].decode() for _id, fields in redis_client.xrange(keys.DECISIONS_STREAM)]
    assert len(published) == 30 and not any(challenger in p or "shadow" in p for p in published)
    by_event = {r["event_id"]: r["decision"] for r in records}
    assert {json.loads(p)["event_id"]: json.loads(p)["decision"] for p in published} == by_event


def test_a_failing_shadow_never_changes_the_decision(
    redis_client: redis.Redis, env: pytest.MonkeyPatch, model_dir: Path
) -> None:
    env.setenv("SHADOW_MODEL_VERSION", "no-such-version")
    tasks.settings.cache_clear()
    decide(3)
    records = read_records(redis_client, keys.DECISIONS_STREAM)
    assert [r["shadow"]["version"] for r in records] == ["no-such-version"] * 3
    assert all("no-such-version" in r["shadow"]["error"] and r["error"] is None for r in records)
    assert all(r["decision"] in ("approve", "review", "decline") for r in records)


def test_the_sla_page_shows_agreement_and_the_rate_difference(
    redis_client: redis.Redis, env: pytest.MonkeyPatch, challenger: str
) -> None:
    assert shadow_view(redis_client, keys.DECISIONS_STREAM) == []
    decide(5, seed=9)  # without a shadow: not counted
    env.setenv("SHADOW_MODEL_VERSION", challenger)
    tasks.settings.cache_clear()
    decide(40)
    records = [r for r in read_records(redis_client, keys.DECISIONS_STREAM) if r["shadow"]]
    (figures,) = shadow_view(redis_client, keys.DECISIONS_STREAM)
    assert figures.version == challenger and figures.scored == 40 and figures.failed == 0
    assert figures.agreement == sum(r["shadow"]["decision"] == r["decision"] for r in records) / 40
    approve_old = sum(r["decision"] == "approve" for r in records) / 40
    approve_new = sum(r["shadow"]["decision"] == "approve" for r in records) / 40
    assert figures.to_dict()["rate_difference"]["approve"] == pytest.approx(approve_new - approve_old)
    assert approve_new > approve_old
    page = render_section([figures])
    assert challenger in page and f"{figures.agreement:.1%}" in page and f"{approve_new - approve_old:+.1%}" in page
