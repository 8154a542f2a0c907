"""The onboarding pipeline's steps, as plain functions the DAG wires together.

Each step takes and returns JSON-able dicts (they travel as XComs) and stamps the time it
finished, so the decision event carries a timestamp per stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from onboarding.decision import DecisionEvent, publish_decision, utc_now
from onboarding.keys import DECISION_KEY_TTL_S, run_id_for
from onboarding.logs import log_event
from risk.artifacts import LoadedModel
from risk.errors import StageFailed
from risk.model import generic_reason_text, probability_bad, reason_codes
from risk.policy import Decision, Policy

logger = logging.getLogger(__name__)


def enrich(signup: dict[str, Any], accepted_at: str | None, run_started_at: str) -> dict[str, Any]:
    """Add what the model and policy need beyond the raw application."""
    application = dict(signup["application"])
    months = max(1, int(application["duration_months"]))
    return {
        "event_id": signup["event_id"],
        "user_id": signup["user_id"],
        "application": application,
        "derived": {"monthly_amount": round(float(application["credit_amount"]) / months, 2)},
        "timestamps": {
            "occurred_at": signup["occurred_at"],
            **({"accepted_at": accepted_at} if accepted_at else {}),
            "run_started_at": run_started_at,
            "enriched_at": utc_now(),
        },
    }


def score(enriched: dict[str, Any], model: LoadedModel) -> dict[str, Any]:
    application = enriched["application"]
    p_bad = probability_bad(model.pipeline, application)
    return {
        **enriched,
        "score": round(p_bad, 6),
        "reason_codes": [r.to_dict() for r in reason_codes(model.pipeline, application)],
        "model_version": model.version,
        "policy": model.policy.to_dict(),
        "timestamps": {**enriched["timestamps"], "scored_at": utc_now()},
    }


def decide(scored: dict[str, Any]) -> dict[str, Any]:
    """Apply the policy of the model version that scored (a promotion between the two tasks
    must not pair one version's score with another's thresholds)."""
    decision = Policy.from_dict(scored["policy"]).decide(float(scored["score"]))
    return {
        **scored,
        "decision": decision.value,
        # An approved applicant needs no adverse-action reasons.
        "reason_codes": [] if decision is Decision.APPROVE else scored["reason_codes"],
        "timestamps": {**scored["timestamps"], "decided_at": utc_now()},
    }


def run_stages(
    signup: dict[str, Any],
    accepted_at: str | None,
    run_started_at: str,
    model: Callable[[], LoadedModel],
) -> dict[str, Any]:
    """enrich -> score -> decide in one process (the onboarding DAG's single task).

    Each step is logged with its duration and stamps its time in the result, so the steps
    stay visible per run without a task (and a scheduling round) each."""
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
        decided["model_version"],
        (t3 - t2) * 1000,
        event_id=signup["event_id"],
        run_id=run_id_for(signup["event_id"]),
        decision=decided["decision"],
    )
    return decided


def decision_event(
    signup: dict[str, Any],
    decided: dict[str, Any] | None,
    run_id: str | None,
    failure: str | None,
    accepted_at: str | None = None,
) -> DecisionEvent:
    """The event to publish: the decision, or `review` with the reason the pipeline failed."""
    if decided is not None:
        return DecisionEvent(
            event_id=decided["event_id"],
            user_id=decided["user_id"],
            decision=decided["decision"],
            score=decided["score"],
            # Personal data (issue 9): codes and weights, not the applicant's values.
            reason_codes=[
                {**r, "text": generic_reason_text(r["code"])} if r.get("code") else r for r in decided["reason_codes"]
            ],
            model_version=decided["model_version"],
            run_id=run_id,
            timestamps=dict(decided["timestamps"]),
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


def publish(
    client: redis.Redis, stream: str, event: DecisionEvent, marker_ttl_s: int, decision_ttl_s: int = DECISION_KEY_TTL_S
) -> str:
    published, entry_id = publish_decision(client, stream, event, marker_ttl_s, decision_ttl_s)
    if published:
        log_event(
            logger,
            logging.INFO,
            "onboarding: published the decision",
            event_id=event.event_id,
            run_id=event.run_id,
            entry_id=entry_id,
            decision=event.decision,
        )
    else:
        log_event(
            logger,
            logging.INFO,
            "onboarding: the decision was published already",
            event_id=event.event_id,
            run_id=event.run_id,
            entry_id=entry_id,
        )
    return entry_id
