"""A small client for product apps: submit a signup, get its decision.

    from onboarding_client import OnboardingClient, Refused

    client = OnboardingClient.from_url("redis://app:PASSWORD@redis:6379/0")
    event_id = client.submit(application, user_id="u-42")          # validated, idempotent: keep the id
    try:
        decision = client.wait(event_id, timeout_s=10)             # one key read + one channel
    except Refused as refused:                                     # dead-lettered: refused.refusal.reason
        ...
    if decision is not None and decision.outcome == "approve": ...
    final = client.wait(event_id, timeout_s=3600, until_final=True)  # through a `review`

    for item in client.feed(group="billing-app", consumer="pod-1"):  # every decision, acked
        handle(item.decision)
        item.ack()

With the app's own Redis user, `OnboardingClient.from_url(url, app="web")`: signups go to the
app's intake, answers are read under `web:<event_id>`, `feed` reads the app's own decision
stream `decisions:app:web`, and `answers` reads it together with the app's refusals
`decisions:app:web:refusals` (`item.answer` is a `Decision` or a `Refusal`).

`AsyncOnboardingClient` is the same on `redis.asyncio`. The contracts are the service's
JSON Schemas (signup.v1.json, decision.v1.json, refusal.v1.json) and docs/integration.md;
this package depends on redis and jsonschema only. The Redis user needs the `app` role of
the service's ACL.
"""

from onboarding_client.client import (
    AnswerItem,
    AsyncAnswerItem,
    AsyncFeedItem,
    AsyncOnboardingClient,
    ContractError,
    Decision,
    FeedItem,
    OnboardingClient,
    OnboardingClientError,
    ReasonCode,
    Refusal,
    Refused,
    ReviewInfo,
    ServiceFull,
    app_feed_stream,
    app_refusals_stream,
    decision_key,
    intake_stream,
    new_event_id,
    read_answer,
    service_event_id,
    signup_payload,
    signup_schema,
    validate_signup,
)

__all__ = [
    "AnswerItem",
    "AsyncAnswerItem",
    "AsyncFeedItem",
    "AsyncOnboardingClient",
    "ContractError",
    "Decision",
    "FeedItem",
    "OnboardingClient",
    "OnboardingClientError",
    "ReasonCode",
    "Refusal",
    "Refused",
    "ReviewInfo",
    "ServiceFull",
    "app_feed_stream",
    "app_refusals_stream",
    "decision_key",
    "intake_stream",
    "new_event_id",
    "read_answer",
    "service_event_id",
    "signup_payload",
    "signup_schema",
    "validate_signup",
]
