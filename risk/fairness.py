"""Fairness of the decisions by sex, age band and foreign-worker status (on the credit_data
set: by age band and marital status, `risk.datasets`).

None of the three is a feature of the model except age (a data set column the model uses);
sex and foreign-worker status come from the data set's own columns and serve this report only.
Measured on the out-of-fold decisions of cross-validation (applicants the model had not
seen), per group:

- approval, review and decline rates;
- good applicants approved (the equal-opportunity rate: the favourable outcome for those
  who deserved it), good applicants declined, bad applicants approved;

and per attribute:

- the disparate-impact ratio: lowest group approval rate / highest (the four-fifths rule
  flags a ratio below 0.8);
- the equal-opportunity difference: highest minus lowest rate of good applicants approved.
"""

from __future__ import annotations

import statistics
from typing import Any

from risk.policy import Decision

ATTRIBUTES = ("sex", "age_band", "foreign_worker")
AGE_BANDS = ((0, "under 25"), (25, "25-34"), (35, "35-49"), (50, "50 and over"))
FOUR_FIFTHS = 0.8


def age_band(age: float) -> str:
    return next(label for floor, label in reversed(AGE_BANDS) if age >= floor)


def protected_attributes(record: dict[str, str]) -> dict[str, str]:
    """The groups of one data set row (its raw columns)."""
    return {
        "sex": record["personal_status_and_sex"].split(":", 1)[0].strip(),
        "age_band": age_band(float(record["age_in_years"])),
        "foreign_worker": "foreign worker" if record["foreign_worker"] == "yes" else "not a foreign worker",
    }


def fairness_report(decisions: list[Decision], bad: list[bool], groups: list[dict[str, str]]) -> dict[str, Any]:
    """Per attribute: the rates of each group, the disparate-impact ratio and the
    equal-opportunity difference."""
    report: dict[str, Any] = {}
    # The data set's attributes (German credit: `ATTRIBUTES`; credit_data: age band, marital status).
    for attribute in groups[0] if groups else ATTRIBUTES:
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            if g[attribute]:  # an empty group: the data set does not say (left out of this attribute)
                members.setdefault(g[attribute], []).append(i)
        rates = {}
        for group, index in sorted(members.items(), key=lambda item: _order(attribute, item[0])):
            made = [decisions[i] for i in index]
            good = [decisions[i] for i in index if not bad[i]]
            bads = [decisions[i] for i in index if bad[i]]
            rates[group] = {
                "n": len(index),
                "approval_rate": _share(made, Decision.APPROVE),
                "review_rate": _share(made, Decision.REVIEW),
                "decline_rate": _share(made, Decision.DECLINE),
                "good_approved_rate": _share(good, Decision.APPROVE),
                "good_declined_rate": _share(good, Decision.DECLINE),
                "bad_approved_rate": _share(bads, Decision.APPROVE),
            }
        approvals = [r["approval_rate"] for r in rates.values()]
        opportunity = [r["good_approved_rate"] for r in rates.values()]
        report[attribute] = {
            "groups": rates,
            "disparate_impact": min(approvals) / max(approvals) if max(approvals) > 0 else 1.0,
            "equal_opportunity_difference": max(opportunity) - min(opportunity),
        }
    return report


def average(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several reports of the same groups (one per CV repeat), rounded."""
    if not reports:
        return {}

    def mean(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {key: mean([v[key] for v in values]) for key in values[0]}
        if isinstance(values[0], int):
            return values[0]
        return round(statistics.fmean(values), 4)

    return dict(mean(reports))


def _order(attribute: str, group: str) -> tuple[int, str]:
    """Age bands youngest first; other groups by name."""
    bands = [label for _, label in AGE_BANDS]
    return (bands.index(group), group) if attribute == "age_band" and group in bands else (0, group)


def _share(decisions: list[Decision], outcome: Decision) -> float:
    return sum(d is outcome for d in decisions) / len(decisions) if decisions else 0.0


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one row per group, the attribute's ratios on its rows."""
    lines = [
        "| attribute | group | n | approved | declined | good approved | good declined | bad approved "
        "| disparate impact | equal-opportunity difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for attribute, entry in report.items():
        for i, (group, r) in enumerate(entry["groups"].items()):
            ratios = (
                f"{entry['disparate_impact']:.3f}{' (< 0.8)' if entry['disparate_impact'] < FOUR_FIFTHS else ''} "
                f"| {entry['equal_opportunity_difference']:.3f}"
                if i == 0
                else " | "
            )
            lines.append(
                f"| {attribute if i == 0 else ''} | {group} | {r['n']} | {r['approval_rate']:.3f} "
                f"| {r['decline_rate']:.3f} | {r['good_approved_rate']:.3f} | {r['good_declined_rate']:.3f} "
                f"| {r['bad_approved_rate']:.3f} | {ratios} |"
            )
    return "\n".join(lines)
