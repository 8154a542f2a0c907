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
    <decisions>:records              publish step: one decision record per decision (append-only;
                                     the evidence: inputs, features, score, policy, model hash, code)
    <decisions>:app:<app>            publish step: an app's own decision feed (its signups' decisions,
                                     a reviewer's final ones too; MAXLEN ~ APP_FEED_MAXLEN), read by
                                     the app's user through its own consumer group
    <decisions>:app:<app>:refusals   listener: the refusals of an app's refused signups (refusal.v1,
                                     same cap), read by the app's user through its consumer group
    <signups>:dead                   dead letters (default "signups:dead")
    <signups>:app:<app>              an app's own intake stream (per-app user; onboarding/intake.py
                                     forwards it into <signups>, the event id becoming <app>:<event>)
    onboarding:archive:lock          archiver: at most one run at a time
    risk:drift:psi                   drift DAG: the latest population stability index
"""

from __future__ import annotations

SIGNUPS_STREAM = "signups"
DECISIONS_STREAM = "decisions"
DEAD_LETTER_STREAM = "signups:dead"

LISTENER_GROUP = "onboarding-listener"
# The listener's group on each app's intake stream (the forwarding function reads through it).
INTAKE_GROUP = "onboarding-forwarder"
SLA_GROUP = "onboarding-sla"

ONBOARDING_DAG_ID = "onboarding"
RUN_ID_PREFIX = "signup__"
# The onboarding DAG's one task: it runs every step and publishes; its XCom is the decided
# record (the audit trail the archive keeps).
DECISION_TASK_ID = "decide"

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


def decision_records_stream(decisions_stream: str) -> str:
    """The decision records: appended by the publish step with each decision (issue 29)."""
    return f"{decisions_stream}:records"


def awaiting_key(signups_stream: str) -> str:
    return f"{signups_stream}:awaiting"


def awaiting_conf_key(signups_stream: str) -> str:
    return f"{signups_stream}:awaiting:conf"


# The review queue: one case per `review` decision, opened by the publish step in the same
# atomic step as the decision (so a case exists exactly when its review was published).
#     <decisions>:review:case:<event>   the case (hash): who, why, score, deadline, state
#     <decisions>:review:queue          open and claimed cases by deadline (sorted set)
#     <decisions>:review:history        every case's history: opened, claimed, released,
#                                       decided, by whom, when (stream; archived weekly)
#     <decisions>:final:<event>         the once-only marker of a case's final decision
REVIEW_DEADLINE_S = 24 * 3600
# A decided case stays readable (onboarding-review show) as long as its marker lives.
REVIEW_CASE_TTL_S = MARKER_TTL_S


def review_case_key(decisions_stream: str, event_id: str) -> str:
    return f"{decisions_stream}:review:case:{event_id}"


def review_case_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:review:case:*"


def review_queue_key(decisions_stream: str) -> str:
    return f"{decisions_stream}:review:queue"


def review_history_key(decisions_stream: str) -> str:
    return f"{decisions_stream}:review:history"


def final_marker_key(decisions_stream: str, event_id: str) -> str:
    return f"{decisions_stream}:final:{event_id}"


def final_marker_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:final:*"


# Per-app isolation (onboarding/intake.py): an app submits to its own intake stream; the
# listener forwards each entry into the signups stream with `app=<app>`, and the signup's
# event id becomes `<app>:<event id>` everywhere after that (run id, decision key and channel).
def intake_stream(signups_stream: str, app: str) -> str:
    return f"{signups_stream}:app:{app}"


def intake_pattern(signups_stream: str) -> str:
    return f"{signups_stream}:app:*"


def app_event_id(app: str, event_id: str) -> str:
    """The service's id of an app's signup: no app can use (squat) another app's ids."""
    return f"{app}:{event_id}"


def app_decision_pattern(decisions_stream: str, app: str) -> str:
    """An app's decisions by event id (keys and channels): all under its own prefix."""
    return f"{decisions_stream}:event:{app}:*"


# An app's own decision feed: the publish step (and a reviewer's final decision) appends each
# decision of the app's signups here too, in the same atomic step as the shared stream, capped
# with `XADD ... MAXLEN ~ <APP_FEED_MAXLEN>`; the intake process trims it by age as well
# (DECISIONS_RETENTION_S). The app's user reads it through its own consumer group.
APP_FEED_MAXLEN = 100_000


def app_feed_stream(decisions_stream: str, app: str) -> str:
    return f"{decisions_stream}:app:{app}"


def app_feed_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:app:*"


# An app's refusals feed: the listener appends the refusal of each of the app's refused signups
# (refusal.v1.json) in the dead letter's transaction, capped like the decision feed and trimmed
# by age with it. A stream of its own, so a feed reader written for decisions only never meets
# a refusal; the clients' `answers` read both through the app's consumer groups.
def app_refusals_stream(decisions_stream: str, app: str) -> str:
    return f"{decisions_stream}:app:{app}:refusals"


def app_refusals_pattern(decisions_stream: str) -> str:
    return f"{decisions_stream}:app:*:refusals"
