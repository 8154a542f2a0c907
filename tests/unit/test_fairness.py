"""The fairness report: groups from the data set (never features), the rates, the
disparate-impact ratio and the equal-opportunity difference, and the gate that guards them."""

from __future__ import annotations

import pytest

from risk.boosted import COLUMNS
from risk.fairness import ATTRIBUTES, age_band, fairness_report, markdown_table
from risk.model import feature_schema, load_training_data
from risk.policy import Decision
from risk.registry import Gate
from risk.settings import RiskSettings

A, R, D = Decision.APPROVE, Decision.REVIEW, Decision.DECLINE


def test_groups_come_from_the_data_set_and_none_is_a_feature_of_the_service_model() -> None:
    data = load_training_data()
    sexes = [g["sex"] for g in data.protected]
    assert sexes.count("female") == 310 and sexes.count("male") == 690
    assert [g["foreign_worker"] for g in data.protected].count("not a foreign worker") == 37
    assert {g["age_band"] for g in data.protected} == {"under 25", "25-34", "35-49", "50 and over"}
    names = {f["name"] for f in feature_schema()} | set(COLUMNS)
    assert not any(word in name for name in names for word in ("sex", "personal_status", "foreign"))
    assert "age_years" in names and "age_years" not in COLUMNS  # in the event, not used by the trees


def test_age_bands() -> None:
    assert [age_band(a) for a in (19, 24.9, 25, 34, 35, 49, 50, 75)] == [
        "under 25",
        "under 25",
        "25-34",
        "25-34",
        "35-49",
        "35-49",
        "50 and over",
        "50 and over",
    ]


def test_rates_disparate_impact_and_equal_opportunity_difference() -> None:
    groups = [{"sex": s, "age_band": "25-34", "foreign_worker": "yes"} for s in ["f"] * 4 + ["m"] * 4]
    # f: 1 of 4 approved (a good one); m: 3 of 4 approved (2 good, 1 bad).
    decisions = [A, D, D, R, A, A, A, D]
    bad = [False, False, True, True, False, False, True, False]
    report = fairness_report(decisions, bad, groups)
    sex = report["sex"]
    assert sex["groups"]["f"]["approval_rate"] == 0.25
    assert sex["groups"]["m"]["approval_rate"] == 0.75
    assert sex["disparate_impact"] == pytest.approx(1 / 3)
    # good approved: f 1 of 2, m 2 of 3
    assert sex["groups"]["f"]["good_approved_rate"] == 0.5
    assert sex["equal_opportunity_difference"] == pytest.approx(2 / 3 - 1 / 2)
    assert sex["groups"]["m"]["bad_approved_rate"] == 1.0
    assert sex["groups"]["f"]["good_declined_rate"] == 0.5
    # One group only: no disparity.
    assert report["age_band"]["disparate_impact"] == 1.0
    assert report["age_band"]["equal_opportunity_difference"] == 0.0
    assert set(report) == set(ATTRIBUTES)
    table = markdown_table(report)
    assert "| sex | f | 4 | 0.250 |" in table and "0.333 (< 0.8)" in table


def _meta(di: float, eo: float, cost: float = 0.5, auc: float = 0.8) -> dict:
    fairness = {a: {"disparate_impact": di, "equal_opportunity_difference": eo, "groups": {}} for a in ATTRIBUTES}
    return {
        "cv": {"repeats": 3, "folds": 10, "seed": 0, "data_sha256": "x"},
        "costs": {"review": 0.7},
        "metrics": {"auc": {"mean": auc}, "cost_policy": {"mean": cost}},
        "fairness": fairness,
    }


def test_gate_refuses_a_challenger_with_a_lower_disparate_impact_beyond_the_tolerance() -> None:
    champion = _meta(di=0.90, eo=0.10)
    passed, reasons = Gate().check(_meta(di=0.84, eo=0.10, cost=0.45), champion)
    assert not passed
    assert any("disparate impact 0.840 < champion 0.900 - 0.05" in r for r in reasons)
    assert Gate().check(_meta(di=0.86, eo=0.10, cost=0.45), champion)[0] is True  # within the tolerance


def test_gate_refuses_a_challenger_with_a_larger_equal_opportunity_difference_beyond_the_tolerance() -> None:
    champion = _meta(di=0.90, eo=0.10)
    passed, reasons = Gate().check(_meta(di=0.95, eo=0.16, cost=0.45), champion)
    assert not passed
    assert any("equal-opportunity difference 0.160 > champion 0.100 + 0.05" in r for r in reasons)
    assert Gate().check(_meta(di=0.95, eo=0.14, cost=0.45), champion)[0] is True


def test_gate_refuses_a_challenger_without_a_fairness_report() -> None:
    challenger = _meta(di=1.0, eo=0.0) | {"fairness": {}}
    passed, reasons = Gate().check(challenger, _meta(di=0.9, eo=0.1))
    assert not passed and "no fairness report" in reasons[-1]


def test_fairness_tolerance_is_a_setting() -> None:
    settings = RiskSettings.from_env({"RISK_GATE_MAX_FAIRNESS_WORSENING": "0.1"})
    assert settings.gate().max_fairness_worsening == 0.1
    assert RiskSettings.from_env({}).gate().max_fairness_worsening == 0.05
    champion = _meta(di=0.90, eo=0.10)
    assert settings.gate().check(_meta(di=0.84, eo=0.18, cost=0.45), champion)[0] is True


def test_a_champion_older_than_the_fairness_report_is_compared_on_cost_and_auc_only() -> None:
    champion = _meta(di=0.9, eo=0.1) | {"fairness": {}}
    passed, reasons = Gate().check(_meta(di=0.1, eo=0.9, cost=0.45), champion)
    assert passed and reasons[-1] == "fairness not compared: the champion has no fairness report"
