"""What the pipeline's steps hand each other: typed, frozen records.

    signup --enrich--> Enriched --score--> Scored --decide--> Decided

Each record carries everything of the one before, plus what its step added and the time it
finished (`timestamps`), so the decision event can report a timestamp per stage. Records are
JSON only where they leave the process: `to_dict()` is the shape of the onboarding task's
XCom (the audit trail the archive keeps, read back by `onboarding-archive audit`), and
`from_dict()` reads that shape back, so archived records stay readable.

This module loads no model code (no scikit-learn): readers of archived records import it
cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from risk.policy import Decision, Policy

__all__ = ["Decided", "Enriched", "ReasonCode", "Scored", "carried"]


@dataclass(frozen=True)
class ReasonCode:
    """A feature that pushed the applicant's score toward "bad", with its text and push."""

    code: str
    text: str
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "contribution": round(self.contribution, 4)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReasonCode:
        return cls(code=str(data["code"]), text=str(data["text"]), contribution=float(data["contribution"]))


@dataclass(frozen=True)
class Enriched:
    """The application, with what the model and policy need beyond it."""

    event_id: str
    user_id: str
    application: Mapping[str, Any]
    monthly_amount: float
    timestamps: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "application": dict(self.application),
            "derived": {"monthly_amount": self.monthly_amount},
            "timestamps": dict(self.timestamps),
        }

    @classmethod
    def _enriched_fields(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "event_id": str(data["event_id"]),
            "user_id": str(data["user_id"]),
            "application": dict(data["application"]),
            "monthly_amount": float(data["derived"]["monthly_amount"]),
            "timestamps": {str(k): str(v) for k, v in data["timestamps"].items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Enriched:
        return Enriched(**cls._enriched_fields(data))


@dataclass(frozen=True)
class Scored(Enriched):
    """Scored by one model version; it keeps that version's policy, so a promotion between
    scoring and deciding cannot pair one version's score with another's thresholds."""

    score: float
    reason_codes: tuple[ReasonCode, ...]
    model_version: str
    policy: Policy

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "score": self.score,
            "reason_codes": [r.to_dict() for r in self.reason_codes],
            "model_version": self.model_version,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def _scored_fields(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **cls._enriched_fields(data),
            "score": float(data["score"]),
            "reason_codes": tuple(ReasonCode.from_dict(r) for r in data["reason_codes"]),
            "model_version": str(data["model_version"]),
            "policy": Policy.from_dict(dict(data["policy"])),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scored:
        return Scored(**cls._scored_fields(data))


@dataclass(frozen=True)
class Decided(Scored):
    """The decision under the scoring version's policy (the onboarding task's XCom)."""

    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "decision": self.decision.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decided:
        return Decided(**cls._scored_fields(data), decision=Decision(data["decision"]))


def carried(record: Enriched, as_: type[Enriched]) -> dict[str, Any]:
    """The fields of `record` that a record of type `as_` carries (the next step's record is
    built from them and what the step adds)."""
    return {f.name: getattr(record, f.name) for f in fields(as_)}
