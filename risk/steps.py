"""The onboarding pipeline's steps, defined once: enrich -> score -> decide, and the decision
event they lead to.

The steps pass typed records (`risk.records`: `Enriched`, `Scored`, `Decided`); each stamps
the time it finished, so the decision event carries a timestamp per stage. Publishing the
event (once, with retries through a Redis outage) is `risk.publishing`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from onboarding.decision import DecisionEvent, utc_now
from onboarding.keys import run_id_for
from onboarding.logs import log_event
from risk.artifacts import LoadedModel
from risk.errors import StageFailed
from risk.model import generic_reason_text, probability_bad, reason_codes
from risk.policy import Decision
from risk.records import Decided, Enriched, Scored, carried

__all__ = ["StageFailed", "decide", "decision_event", "enrich", "run_stages", "score"]

logger = logging.getLogger(__name__)


def enrich(signup: Mapping[str, Any], accepted_at: str | None, run_started_at: str) -> Enriched:
    """Add what the model and policy need beyond the raw application."""
    application = dict(signup["application"])
    months = max(1, int(application["duration_months"]))
    return Enriched(
        event_id=signup["event_id"],
        user_id=signup["user_id"],
        application=application,
        monthly_amount=round(float(application["credit_amount"]) / months, 2),
        timestamps={
            "occurred_at": signup["occurred_at"],
            **({"accepted_at": accepted_at} if accepted_at else {}),
            "run_started_at": run_started_at,
            "enriched_at": utc_now(),
        },
    )


def score(enriched: Enriched, model: LoadedModel) -> Scored:
    """Score with `model`, keeping its version and policy with the score."""
    application = enriched.application
    p_bad = probability_bad(model.scorer, application)
    return Scored(
        **{**carried(enriched, Enriched), "timestamps": {**enriched.timestamps, "scored_at": utc_now()}},
        score=round(p_bad, 6),
        reason_codes=tuple(reason_codes(model.scorer, application)),
        model_version=model.version,
        policy=model.policy,
    )


def decide(scored: Scored) -> Decided:
    """Apply the policy of the model version that scored (a promotion between scoring and
    deciding must not pair one version's score with another's thresholds)."""
    decision = scored.policy.decide(scored.score)
    return Decided(
        **{
            **carried(scored, Scored),
            # An approved applicant needs no adverse-action reasons.
            "reason_codes": () if decision is Decision.APPROVE else scored.reason_codes,
            "timestamps": {**scored.timestamps, "decided_at": utc_now()},
        },
        decision=decision,
    )


def run_stages(
    signup: Mapping[str, Any],
    accepted_at: str | None,
    run_started_at: str,
    model: Callable[[], LoadedModel],
) -> Decided:
    """enrich -> score -> decide in one process (the onboarding DAG's single task).

    Each step is logged with its duration and stamps its time in the result, so the steps
    stay visible per run without a task (and a scheduling round) each. A failing step raises
    `StageFailed` naming it."""
    stage = "enrich"
    try:
        t0 = time.perf_counter()
        enriched = enrich(signup, accepted_at, run_started_at)
        t1 = time.perf_counter()
        stage = "score"
        scored = score(enriched, model())
        t2 = time.perf_counter()
        stage = "decide"
        decided = decide(scored)
        t3 = time.perf_counter()
    except Exception as err:
        raise StageFailed(stage, err) from err
    log_event(
        logger,
        logging.INFO,
        "onboarding: enrich %.1f ms, score %.1f ms (model %s), decide %.1f ms",
        (t1 - t0) * 1000,
        (t2 - t1) * 1000,
        decided.model_version,
        (t3 - t2) * 1000,
        event_id=decided.event_id,
        run_id=run_id_for(decided.event_id),
        decision=decided.decision.value,
    )
    return decided


def decision_event(
    signup: Mapping[str, Any],
    decided: Decided | None,
    run_id: str | None,
    failure: str | None,
    accepted_at: str | None = None,
) -> DecisionEvent:
    """The event to publish: the decision, or `review` with the reason the pipeline failed."""
    if decided is not None:
        return DecisionEvent(
            event_id=decided.event_id,
            user_id=decided.user_id,
            decision=decided.decision.value,
            score=decided.score,
            # Personal data (issue 9): codes and weights, not the applicant's values.
            reason_codes=[{**r.to_dict(), "text": generic_reason_text(r.code)} for r in decided.reason_codes],
            model_version=decided.model_version,
            run_id=run_id,
            timestamps=dict(decided.timestamps),
        )
    timestamps = {"occurred_at": signup["occurred_at"]}
    if accepted_at:
        timestamps["accepted_at"] = accepted_at
    return DecisionEvent(
        event_id=signup["event_id"],
        user_id=signup["user_id"],
        decision=Decision.REVIEW.value,
        score=None,
        reason_codes=[{"code": "pipeline_failed", "text": "Automated assessment unavailable", "contribution": None}],
        model_version=None,
        run_id=run_id,
        timestamps=timestamps,
        error=failure or "the pipeline did not produce a decision",
    )
