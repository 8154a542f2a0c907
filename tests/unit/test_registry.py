"""Promotion gate, atomic promotion, one-command rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk.artifacts import current_version, model_store, save_model
from risk.cli import main as model_cli
from risk.errors import ModelError
from risk.integrity import Signer, sign_version
from risk.model import fit, load_training_data
from risk.policy import CostMatrix, Policy
from risk.registry import Gate, history, promote, rollback

CV = {"repeats": 3, "folds": 10, "seed": 0, "data_sha256": "x"}


@pytest.fixture(scope="module")
def fitted():
    return fit(load_training_data())


def version(model_dir: Path, fitted, auc: float, cost: float, cv: dict | None = None) -> str:
    metrics = {"auc": {"mean": auc, "std": 0.01}, "cost_policy": {"mean": cost, "std": 0.01}}
    policy = Policy.from_costs(CostMatrix(review_cost=0.7))
    return save_model(model_dir, fitted, policy, "ab" * 32, metrics, make_current=False, extra={"cv": cv or CV})


def test_gate_promotes_a_better_challenger_and_refuses_a_worse_one(tmp_path: Path, fitted) -> None:
    champion = version(tmp_path, fitted, auc=0.78, cost=0.55)
    assert promote(tmp_path, champion) == ["no champion in service"]
    better = version(tmp_path, fitted, auc=0.79, cost=0.53)
    promote(tmp_path, better)
    assert current_version(tmp_path) == better
    worse = version(tmp_path, fitted, auc=0.79, cost=0.60)
    with pytest.raises(ModelError, match="did not pass the promotion gate: cost per applicant"):
        promote(tmp_path, worse)
    assert current_version(tmp_path) == better
    ranked_worse = version(tmp_path, fitted, auc=0.70, cost=0.52)
    with pytest.raises(ModelError, match="AUC"):
        promote(tmp_path, ranked_worse)


def test_challenger_on_other_folds_is_not_compared(tmp_path: Path, fitted) -> None:
    promote(tmp_path, version(tmp_path, fitted, auc=0.78, cost=0.55))
    other = version(tmp_path, fitted, auc=0.90, cost=0.40, cv=CV | {"seed": 1})
    with pytest.raises(ModelError, match="other folds"):
        promote(tmp_path, other)
    promote(tmp_path, other, force=True)  # an operator may override, and it is recorded
    assert history(tmp_path)[-1]["version"] == other


def test_rollback_restores_the_previous_version_and_the_service_follows(tmp_path: Path, fitted) -> None:
    first = version(tmp_path, fitted, auc=0.78, cost=0.55)
    promote(tmp_path, first)
    second = version(tmp_path, fitted, auc=0.79, cost=0.54)
    promote(tmp_path, second)
    store = model_store(tmp_path)
    assert store.current().version == second
    assert rollback(tmp_path) == first
    assert current_version(tmp_path) == first
    assert store.current().version == first  # no restart needed
    assert [h["action"] for h in history(tmp_path)] == ["promote", "promote", "rollback"]


def test_rollback_without_history_says_so(tmp_path: Path, fitted) -> None:
    promote(tmp_path, version(tmp_path, fitted, auc=0.78, cost=0.55))
    with pytest.raises(ModelError, match="nothing to roll back"):
        rollback(tmp_path)


def test_cli_rollback_is_one_command(tmp_path: Path, fitted, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RISK_MODEL_DIR", str(tmp_path))
    first = version(tmp_path, fitted, auc=0.78, cost=0.55)
    second = version(tmp_path, fitted, auc=0.79, cost=0.54)
    assert model_cli(["promote", first]) == 0
    assert model_cli(["promote", second]) == 0
    assert model_cli(["rollback"]) == 0
    assert first in capsys.readouterr().out
    assert current_version(tmp_path) == first


def test_gate_thresholds_are_configurable() -> None:
    champion = {"cv": CV, "metrics": {"auc": {"mean": 0.80}, "cost_policy": {"mean": 0.50}}}
    challenger = {"cv": CV, "metrics": {"auc": {"mean": 0.79}, "cost_policy": {"mean": 0.51}}}
    assert Gate().check(challenger, champion)[0] is False
    assert Gate(max_cost_increase=0.02, max_auc_drop=0.02).check(challenger, champion)[0] is True


def test_a_champion_that_no_longer_fits_the_schema_is_not_defended(tmp_path: Path, fitted) -> None:
    import json

    old = version(tmp_path, fitted, auc=0.99, cost=0.10)
    promote(tmp_path, old)
    meta_path = tmp_path / old / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["features"] = meta["features"][:-3]  # trained before the derived features existed
    meta_path.write_text(json.dumps(meta))
    sign_version(tmp_path / old, Signer())  # signed as it is: refused for its schema, not its signature
    new = version(tmp_path, fitted, auc=0.78, cost=0.55)
    assert promote(tmp_path, new) == ["no champion in service"]
    assert current_version(tmp_path) == new


def test_rolling_back_twice_goes_further_back(tmp_path: Path, fitted) -> None:
    a = version(tmp_path, fitted, auc=0.78, cost=0.55)
    b = version(tmp_path, fitted, auc=0.79, cost=0.54)
    c = version(tmp_path, fitted, auc=0.80, cost=0.53)
    for v in (a, b, c):
        promote(tmp_path, v)
    assert rollback(tmp_path) == b
    assert rollback(tmp_path) == a
    with pytest.raises(ModelError, match="nothing to roll back"):
        rollback(tmp_path)
    assert current_version(tmp_path) == a


def test_a_version_the_service_cannot_load_is_never_promoted(tmp_path: Path, fitted) -> None:
    good = version(tmp_path, fitted, auc=0.78, cost=0.55)
    promote(tmp_path, good)
    broken = version(tmp_path, fitted, auc=0.90, cost=0.40)
    (tmp_path / broken / "model.skops").write_bytes(b"not a model")
    sign_version(tmp_path / broken, Signer())  # signed as it is: refused for its file, not its signature
    with pytest.raises(ModelError, match="cannot load"):
        promote(tmp_path, broken, force=True)
    assert current_version(tmp_path) == good


def test_versions_evaluated_under_other_costs_are_not_compared() -> None:
    champion = {"cv": CV, "costs": {"review": 0.7}, "metrics": {"auc": {"mean": 0.8}, "cost_policy": {"mean": 0.5}}}
    challenger = champion | {"costs": {"review": 0.5}}
    passed, reasons = Gate().check(challenger, champion)
    assert not passed and "other costs" in reasons[0]
