"""Every name that components share, in one place: streams, consumer groups, Redis keys,
the onboarding DAG and its run ids, and how long the keys live.

Stream names are configurable (`StreamSettings`); the keys derived from them are built here
and nowhere else, so the listener, the DAG's publish step, the SLA service, the Redis ACL
rules and `onboarding-erase` always agree on them.

    <signups>                        the signups stream (default "signups")
    <signups>:fingerprint:<event>    listener: the first payload seen for an event id
    <signups>:awaiting               SLA: accepted event ids by accept time (sorted set)
    <signups>:awaiting:conf          SLA: the run conf of each awaiting event (hash)
    <decisions>                      the decisions stream (default "decisions")
    <decisions>:published:<event>    publish step: the once-only marker of a decision
    <decisions>:event:<event>        publish step: the decision itself, for a lookup by event id;
                                     also the Pub/Sub channel its publication is announced on
    <signups>:dead                   dead letters (default "signups:dead")
    onboarding:archive:lock          archiver: at most one run at a time
    risk:drift:psi                   drift DAG: the latest population stability index
"""

from __future__ import annotations

SIGNUPS_STREAM = "signups"
DECISIONS_STREAM = "decisions"
DEAD_LETTER_STREAM = "signups:dead"

LISTENER_GROUP = "onboarding-listener"
SLA_GROUP = "onboarding-sla"

ONBOARDING_DAG_ID = "onboarding"
RUN_ID_PREFIX = "signup__"
# The onboarding DAG's task ids: `decide` runs every step; the benchmark's stepwise shape
# runs one task per step and answers in `publish`.
DECIDE_TASK = "decide"
STEPWISE_TASKS = ("enrich", "score", "decide", "publish")

ARCHIVE_LOCK = "onboarding:archive:lock"
DRIFT_KEY = "risk:drift:psi"

# A retried signup within this horizon is recognised (fingerprint) and decided once (marker).
FINGERPRINT_TTL_S = 30 * 24 * 3600
MARKER_TTL_S = 30 * 24 * 3600
# A decision can be looked up by event id as long as the decisions stream keeps it.
DECISION_KEY_TTL_S = 7 * 24 * 3600


def run_id_for(event_id: str) -> str:
    """The onboarding DAG run id of a signup: derived from the event id, so a retry finds the
    same run. The signup schema restricts event ids to characters Airflow accepts in run ids."""
    return f"{RUN_ID_PREFIX}{event_id}"


def fingerprint_key(signups_stream: str, event_id: str) -> str:
    return f"{signups_stream}:fingerprint:{event_id}"


def fingerprint_pattern(signups_stream: str) -> str:
    return f"{signups_stream}:fingerprint:*"


def marker_key(decisions_stream: str, event_id: str) -> str:
    return f"{decisions_stream}:published:{event_id}"


def marker_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:published:*"


def decision_key(decisions_stream: str, event_id: str) -> str:
    """The decision of one event (its JSON payload), and the channel announcing it."""
    return f"{decisions_stream}:event:{event_id}"


def decision_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:event:*"


def awaiting_key(signups_stream: str) -> str:
    return f"{signups_stream}:awaiting"


def awaiting_conf_key(signups_stream: str) -> str:
    return f"{signups_stream}:awaiting:conf"
