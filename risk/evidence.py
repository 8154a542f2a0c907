"""Decision records: the evidence of each decision, written once with it (issue 29, item 1).

A record holds what a reviewer, an auditor or `onboarding-model replay` needs to know exactly
what decided, and to decide again:

    inputs        the signup event as the task received it (its params, `accepted_at` too)
    features      the model row as computed from it (the data set's feature contract)
    score, reason_codes, decision, error
    policy        the thresholds that turned the score into the decision
    model         version, content hash (SHA-256 of its signed manifest, risk/integrity.py), data set
    code          the package version and, where known, the git commit
    timestamps    the stages' times, `recorded_at`, and `published_at` (set by the publish step)
    shadow        the challenger's score and decision, when shadow scoring is on (never published)

The publish step appends it to `<decisions>:records` in the same Redis Function call as the
decision (onboarding/decision.py: one record per published decision, none without one); the
weekly archive moves records into the archive store and keeps them for
`DECISION_RECORD_RETENTION_MONTHS` (archiver/decision_records.py). Nothing rewrites a record:
the publisher may only append, and erasure within the retention period refuses or
pseudonymises (ops/erase.py, docs/security.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onboarding.decision import utc_now

if TYPE_CHECKING:
    from risk.artifacts import LoadedModel
    from risk.records import Decided

__all__ = ["RECORD_VERSION", "code_version", "decision_record", "features_of", "jsonable"]

RECORD_VERSION = 1
PACKAGE = "onboarding-decisions"


def jsonable(value: Any) -> Any:
    """`value` with every NaN or infinity as None (JSON has neither; a missing value of the
    credit_data contract is NaN in the model row)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def features_of(model: LoadedModel, application: Mapping[str, Any]) -> dict[str, Any]:
    """The model row the scorer saw for this application (its data set's contract)."""
    from risk.datasets import dataset_of

    return jsonable(dataset_of(model.scorer).model_row(application))


def _git_sha(root: Path) -> str | None:
    """The commit of a source checkout, read from `.git` without running git (None if none)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip() or None
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


@cache
def code_version(git_sha: str | None = None) -> dict[str, str | None]:
    """The package version, and the commit: `git_sha` (ONBOARDING_GIT_SHA, set by an image
    build), else the checkout's HEAD when running from one (the local stack), else None."""
    try:
        package = version(PACKAGE)
    except PackageNotFoundError:
        package = None
    return {"package": PACKAGE, "version": package, "git_sha": git_sha or _git_sha(Path(__file__).resolve().parents[1])}


def decision_record(
    signup: Mapping[str, Any],
    run_id: str | None,
    decided: Decided | None,
    model: LoadedModel | None,
    code: Mapping[str, str | None],
    error: str | None = None,
    shadow: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one decision: `decided` by `model`, or (None) the `review` a failure
    answered with `error`."""
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "event_id": signup["event_id"],
        "user_id": signup["user_id"],
        "run_id": run_id,
        "inputs": jsonable(dict(signup)),
        "code": dict(code),
        "error": error,
        "shadow": dict(shadow) if shadow is not None else None,
    }
    if decided is None or model is None:
        return {
            **record,
            "features": None,
            "derived": None,
            "score": None,
            "reason_codes": [],
            "decision": "review",
            "policy": None,
            "model": None,
            "timestamps": {"occurred_at": signup.get("occurred_at"), "recorded_at": utc_now()},
        }
    return {
        **record,
        "features": features_of(model, decided.application),
        "derived": {"monthly_amount": decided.monthly_amount},
        "score": decided.score,
        "reason_codes": [r.to_dict() for r in decided.reason_codes],
        "decision": decided.decision.value,
        "policy": decided.policy.to_dict(),
        "model": {
            "version": model.version,
            "content_sha256": model.content_hash,
            "dataset": model.metadata.get("dataset", "german_credit"),
        },
        "timestamps": {**decided.timestamps, "recorded_at": utc_now()},
    }
