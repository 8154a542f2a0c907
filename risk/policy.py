"""The decision policy: approve, review or decline from the probability that an applicant is bad.

Thresholds follow the data set's cost matrix. Approving costs `bad_approved_cost * p` in
expectation, declining costs `good_declined_cost * (1 - p)`, and a manual review costs
`review_cost` (an analyst's time; the analyst is assumed to decide correctly). Each applicant
gets the cheapest of the three, which gives two thresholds on p:

    approve  if p <= review_cost / bad_approved_cost
    decline  if p >= 1 - review_cost / good_declined_cost
    review   otherwise

With review_cost at or above the Bayes point the review band vanishes and the rule is the
data set's Bayes-optimal one: decline when p > good / (good + bad) = 1/6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


@dataclass(frozen=True)
class CostMatrix:
    bad_approved_cost: float = 5.0
    good_declined_cost: float = 1.0
    review_cost: float = 0.7


@dataclass(frozen=True)
class Policy:
    """Two thresholds on P(bad), stored with the model that they were derived for."""

    approve_max: float
    decline_min: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.approve_max <= self.decline_min <= 1.0:
            raise ValueError(
                f"policy thresholds must satisfy 0 <= approve_max <= decline_min <= 1, "
                f"got approve_max={self.approve_max}, decline_min={self.decline_min}"
            )

    @classmethod
    def from_costs(
        cls, costs: CostMatrix, review_capacity: float | None = None, scores: list[float] | None = None
    ) -> Policy:
        """The cost-optimal thresholds; with a review capacity (a share of applicants) and the
        score distribution it applies to, the band shrinks to the applicants a review saves
        most on, so that at most that share is sent to review."""
        bayes = costs.good_declined_cost / (costs.good_declined_cost + costs.bad_approved_cost)
        approve_max = costs.review_cost / costs.bad_approved_cost
        decline_min = 1.0 - costs.review_cost / costs.good_declined_cost
        if approve_max >= decline_min:
            # Review is never cheaper than the better of approve and decline.
            return cls(approve_max=bayes, decline_min=bayes)
        if review_capacity is None or not scores:
            return cls(approve_max=approve_max, decline_min=decline_min)
        # What a review saves on an applicant with score p: the cheaper automatic decision
        # minus the review cost. Keep the band to the top `review_capacity` savers.
        savings = sorted(
            (min(costs.bad_approved_cost * p, costs.good_declined_cost * (1 - p)) - costs.review_cost for p in scores),
            reverse=True,
        )
        allowed = int(review_capacity * len(savings))
        if allowed >= len(savings) or savings[allowed] <= 0:
            return cls(approve_max=approve_max, decline_min=decline_min)
        floor = costs.review_cost + (savings[allowed] if allowed > 0 else savings[0] + 1e-9)
        narrowed_approve = floor / costs.bad_approved_cost
        narrowed_decline = 1.0 - floor / costs.good_declined_cost
        if narrowed_approve >= narrowed_decline:
            return cls(approve_max=bayes, decline_min=bayes)
        return cls(approve_max=narrowed_approve, decline_min=narrowed_decline)

    def decide(self, p_bad: float) -> Decision:
        if p_bad <= self.approve_max:
            return Decision.APPROVE
        if p_bad >= self.decline_min and p_bad > self.approve_max:
            return Decision.DECLINE
        return Decision.REVIEW

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        return cls(approve_max=float(data["approve_max"]), decline_min=float(data["decline_min"]))


def expected_cost(decisions: list[Decision], bad: list[bool], costs: CostMatrix) -> float:
    """Mean cost per applicant of these decisions against the true outcomes."""
    total = 0.0
    for decision, is_bad in zip(decisions, bad, strict=True):
        if decision is Decision.REVIEW:
            total += costs.review_cost
        elif decision is Decision.APPROVE and is_bad:
            total += costs.bad_approved_cost
        elif decision is Decision.DECLINE and not is_bad:
            total += costs.good_declined_cost
    return total / len(decisions) if decisions else 0.0
