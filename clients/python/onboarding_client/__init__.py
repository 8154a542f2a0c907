"""A small client for product apps: submit a signup, get its decision.

    from onboarding_client import OnboardingClient

    client = OnboardingClient.from_url("redis://app:PASSWORD@redis:6379/0")
    event_id = client.submit(application, user_id="u-42")          # idempotent: keep the id
    decision = client.wait(event_id, timeout_s=10)                 # one key read + one channel
    if decision is not None and decision.outcome == "approve": ...

    for item in client.feed(group="billing-app", consumer="pod-1"):  # every decision, acked
        handle(item.decision)
        item.ack()

`AsyncOnboardingClient` is the same on `redis.asyncio`. The contracts are the service's
JSON Schemas (signup.v1.json, decision.v1.json) and docs/integration.md; this package
depends on Redis only. The Redis user needs the `app` role of the service's ACL.
"""

from onboarding_client.client import (
    AsyncFeedItem,
    AsyncOnboardingClient,
    ContractError,
    Decision,
    FeedItem,
    OnboardingClient,
    ReasonCode,
    decision_key,
    new_event_id,
    signup_payload,
)

__all__ = [
    "AsyncFeedItem",
    "AsyncOnboardingClient",
    "ContractError",
    "Decision",
    "FeedItem",
    "OnboardingClient",
    "ReasonCode",
    "decision_key",
    "new_event_id",
    "signup_payload",
]
