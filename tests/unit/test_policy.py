"""The decision policy follows the data set's 5:1 cost matrix."""

from __future__ import annotations

import pytest

from risk.policy import CostMatrix, Decision, Policy, expected_cost


def test_thresholds_come_from_the_costs() -> None:
    policy = Policy.from_costs(CostMatrix(bad_approved_cost=5, good_declined_cost=1, review_cost=0.7))
    assert policy.approve_max == pytest.approx(0.14)
    assert policy.decline_min == pytest.approx(0.30)
    assert policy.decide(0.10) is Decision.APPROVE
    assert policy.decide(0.20) is Decision.REVIEW
    assert policy.decide(0.90) is Decision.DECLINE


def test_each_decision_is_the_cheapest_in_expectation() -> None:
    costs = CostMatrix(review_cost=0.7)
    policy = Policy.from_costs(costs)
    for i in range(1, 100):
        p = i / 100
        options = {
            Decision.APPROVE: costs.bad_approved_cost * p,
            Decision.DECLINE: costs.good_declined_cost * (1 - p),
            Decision.REVIEW: costs.review_cost,
        }
        assert options[policy.decide(p)] == pytest.approx(min(options.values()))


def test_expensive_review_collapses_to_the_bayes_rule() -> None:
    policy = Policy.from_costs(CostMatrix(review_cost=1.0))
    assert policy.approve_max == policy.decline_min == pytest.approx(1 / 6)
    assert policy.decide(0.16) is Decision.APPROVE
    assert policy.decide(0.17) is Decision.DECLINE


def test_inconsistent_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="approve_max"):
        Policy(approve_max=0.5, decline_min=0.2)


def test_expected_cost_uses_the_matrix() -> None:
    costs = CostMatrix(review_cost=0.5)
    decisions = [Decision.APPROVE, Decision.DECLINE, Decision.REVIEW, Decision.APPROVE]
    bad = [True, False, True, False]
    assert expected_cost(decisions, bad, costs) == pytest.approx((5 + 1 + 0.5 + 0) / 4)
