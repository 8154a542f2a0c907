"""The review as Airflow 3.3 human-in-the-loop tasks (benchmarks/review_backends.py only).

One run per review case: `review` (HITLOperator, approve/decline) waits for a reviewer's
response through the REST API or the UI, then `publish_final` publishes the final decision
to Redis with the project's own once-only publish (onboarding.decision.publish_decision),
as the Redis queue does. Not deployed: the measured alternative.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, task

with DAG(
    dag_id="onboarding_review",
    schedule=None,
    catchup=False,
    # One run per open case: Airflow's default (16 active runs per DAG) would queue the 17th case.
    max_active_runs=1000,
    params={"event_id": "", "user_id": ""},
    tags=["benchmark"],
) as dag:
    review = HITLOperator(
        task_id="review",
        subject="Review signup {{ params.user_id }}",
        body="Borderline score: approve or decline.",
        options=["approve", "decline"],
        response_timeout=timedelta(hours=24),
    )

    @task
    def publish_final(**context) -> str:
        import redis

        from onboarding.decision import DecisionEvent, publish_decision, utc_now

        params = context["params"]
        response = context["ti"].xcom_pull(task_ids="review")
        user = response["responded_by_user"]
        now = utc_now()
        event = DecisionEvent(
            event_id=params["event_id"],
            user_id=params["user_id"],
            decision=response["chosen_options"][0],
            score=None,
            reason_codes=[],
            model_version=None,
            run_id=context["run_id"],
            timestamps={"decided_at": now},
            final=True,
            review={"reviewer": user.get("name") or user.get("id"), "decided_at": now},
        )
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        _, entry = publish_decision(client, os.environ["REVIEW_BENCH_STREAM"], event)
        return entry

    review >> publish_final()
