"""Redis ACL users: each component gets the keys and commands its job needs, nothing else.

A leaked credential then does little: the app's password cannot read signups, the
listener's cannot forge decisions, the publisher's cannot read applications, the rq
worker's cannot touch the streams. Rules are built from the stream names (StreamSettings),
so a deployment with other names gets matching rules.

    onboarding-redis-acl render            # the roles' users (hashed passwords)
    onboarding-redis-acl render --server   # a Redis server's whole `aclfile` (deploy/k8s/redis.yaml)
    onboarding-redis-acl apply --url URL   # ACL SETUSER on a running Redis, as an admin,
                                           # and load the service's Redis Functions
    onboarding-redis-acl load-functions --url URL   # only load the functions (FUNCTION LOAD)

No role holds EVAL or FUNCTION: the service's atomic steps are the `onboarding` Redis
Function library (onboarding/functions/onboarding.lua), loaded here by the administrator,
and each role may FCALL only the functions it runs, on their keys (docs/security.md).

Passwords come from REDIS_ACL_PASSWORD_<ROLE> or, for Kubernetes Secrets mounted as
files, REDIS_ACL_PASSWORD_<ROLE>_FILE (ROLE: APP, LISTENER, INTAKE, PUBLISHER, DRIFT, WORKER, OPERATOR,
SLA, SCALER, BROKER, REVIEWER, and APP_<NAME> for each app of ONBOARDING_APPS, user app-<name>;
with --server also ADMIN, REPLICA and PROBE). A role without a password is
rendered disabled (`off`), never password-less.
Each component then connects with its user in REDIS_URL: redis://listener:<password>@host/0
(rediss:// with TLS in production, see docs/security.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from onboarding import keys
from onboarding.console import add_version, environment_epilog
from onboarding.env import Env
from onboarding.settings import StreamSettings

# Airflow's Celery queue for tasks (`[operators] default_queue`).
CELERY_QUEUE = "default"

# What every client needs to connect (redis-py also tries CLIENT SETINFO, Redis >= 7.2, and
# ignores a refusal; Redis 7.0 does not know it, so it cannot be granted there).
_CONNECT = tuple("+ping +select +auth +hello +client|setname +client|getname".split())


@dataclass(frozen=True)
class Role:
    name: str
    purpose: str
    rules: tuple[str, ...]  # keys (~ %R~ %W~), channels (&), commands (+ -), selectors (...)


def _glob(name: str) -> str:
    """A stream name as a literal ACL key pattern (escape the glob characters)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in name)


def roles(streams: StreamSettings | None = None, archive_lock: str = keys.ARCHIVE_LOCK) -> list[Role]:
    s = streams or StreamSettings()
    signups, decisions, dead = _glob(s.signups_stream), _glob(s.decisions_stream), _glob(s.dead_letter_stream)
    fingerprints, markers = keys.fingerprint_pattern(signups), keys.marker_pattern(decisions)
    per_event = keys.decision_pattern(decisions)  # a decision by event id: key and channel
    awaiting, awaiting_conf = keys.awaiting_key(signups), keys.awaiting_conf_key(signups)
    cases, queue, history = (
        keys.review_case_pattern(decisions),
        keys.review_queue_key(decisions),
        keys.review_history_key(decisions),
    )
    finals = keys.final_marker_pattern(decisions)
    records = keys.decision_records_stream(decisions)
    intakes = keys.intake_pattern(signups)
    feeds = keys.app_feed_pattern(decisions)  # each app's decision feed (<decisions>:app:<app>)
    refusal_feeds = keys.app_refusals_pattern(decisions)  # ... and refusals feed (<decisions>:app:<app>:refusals)
    return [
        # Deprecated, rendered `off` unless REDIS_ACL_PASSWORD_APP is set: raw XADD on the shared
        # signups stream lets one app damage it for all (MAXLEN 0, an id at the top of the id
        # space) and read every app's decisions. Per-app users below replace it.
        Role(
            "app",
            "product app (deprecated, shared): add signups, read decisions (the stream, or one by event id)",
            (
                f"%W~{signups}",
                f"%R~{decisions}",
                f"%R~{per_event}",
                f"&{per_event}",
                "-@all",
                *_CONNECT,
                *"+xadd +xread +xrange +xrevrange +get +subscribe +unsubscribe".split(),
                # A feed of decisions with acknowledgement: the app's own consumer group.
                f"(~{decisions} +xgroup|create +xreadgroup +xack +xautoclaim +xpending)",
            ),
        ),
        Role(
            "listener",
            "signup listener: consume signups, fingerprints, dead letters, answer refusals, drift gauge",
            (
                f"~{signups}",
                f"~{fingerprints}",
                "-@all",
                *_CONNECT,
                # Derived from a real run (tests/unit/test_acl_derived.py). The listener parses
                # untrusted payloads, so it holds nothing destructive on the streams: no XADD on
                # signups, no XTRIM, no DEL; retention and the apps' intakes are the intake
                # process's (below). A compromised listener can mis-decide, not erase.
                *"+multi +exec +discard +exists +set +xgroup|create +xreadgroup +xack +xautoclaim +xclaim".split(),
                "+xpending",
                # Selectors bind commands to keys: XADD only to the dead letters, so a leaked
                # listener password cannot forge a decision or overwrite a signup.
                f"(%W~{dead} +xadd)",
                "(%R~risk:drift:* +hgetall)",
                # Records each accepted signup for overdue detection (onboarding/awaiting.py):
                # FCALL record_accepted, unless its decision is already out. FCALL declares its
                # keys read-write; inside, only EXISTS may touch a marker (no SET or GET). No
                # EVAL: the role runs only the functions the administrator loaded.
                f"(~{awaiting} ~{awaiting_conf} ~{markers} +fcall +exists +zadd +hsetnx)",
                # Answers a refused signup (onboarding/refusal.py): FCALL answer_refusal in the
                # dead letter's transaction: EXISTS on the decision's marker and the event id's
                # fingerprint, SET and PUBLISH on the event's decision key and channel only,
                # and for an app's signup XADD (MAXLEN ~) to that app's refusals feed, write only.
                f"(~{markers} ~{per_event} ~{fingerprints} ~{refusal_feeds} +fcall)",
                f"(%W~{per_event} &{per_event} +set +publish)",
                f"(%W~{refusal_feeds} +xadd)",
            ),
        ),
        # The intake process (intake/, onboarding-intake): never parses a payload. It forwards
        # each app's intake into the signups stream (FCALL forward_intake: XREADGROUP, XADD to
        # signups, XACK, XTRIM of a drained intake, atomically; the commands inside are checked
        # against this user too), blocks on the intakes as the function's consumer, and keeps
        # the streams' retention (XTRIM MINID below what any group still needs). Derived from a
        # real run (tests/unit/test_acl_derived.py).
        Role(
            "intake",
            "intake process: forward the apps' intakes into signups, trim the streams past retention",
            (
                "-@all",
                *_CONNECT,
                f"(~{intakes} ~{signups} +fcall)",
                f"(~{intakes} +xgroup|create +xreadgroup +xack)",
                # XADD to signups only inside forward_intake; the listeners' group created at start
                # (retention then keeps what they have not read, however late they start).
                f"(~{signups} +xadd +xgroup|create)",
                f"(~{signups} ~{decisions} ~{intakes} +exists +xinfo|groups +xpending +xtrim)",
                # The apps' decision feeds by age only (the app's own group cannot hold them longer).
                f"(~{feeds} +xtrim)",
            ),
        ),
        Role(
            "publisher",
            "onboarding DAG tasks: publish each decision once (FCALL publish_decision: GET marker, XADD, "
            "SET marker and the per-event key, PUBLISH on its channel, XADD its decision record and, for an "
            "app's signup, to the app's feed; a review also opens its case)",
            # Commands a function calls are checked against the caller's ACL too (Redis 7).
            # FCALL declares all six keys, so it needs a selector holding them; the commands
            # inside still need their own grants, and there is none for reading the decisions.
            (
                f"~{markers}",
                f"%W~{per_event}",
                f"&{per_event}",
                "-@all",
                *_CONNECT,
                "+get",
                "+set",
                "+publish",
                f"(%W~{decisions} +xadd)",
                # Opening a review case: the case (only if none exists), the queue, the history.
                f"(~{cases} +exists +hset)",
                f"(%W~{queue} +zadd)",
                f"(%W~{history} +xadd)",
                # The decision record (risk/evidence.py): append only, never read, trim or delete.
                f"(%W~{records} +xadd)",
                # An app's signup: the decision's copy in the app's feed (XADD MAXLEN ~), write only.
                f"(%W~{feeds} +xadd)",
                f"(~{decisions} ~{markers} ~{per_event} ~{cases} ~{queue} ~{history} ~{records} ~{feeds} +fcall)",
            ),
        ),
        # Reviewers' tools (review/: onboarding-review and its page): the cases, the queue and
        # the history, and the final decision: appended, stored under the event's key and
        # announced, guarded by its once-only marker, all in one Redis Function. It cannot read
        # signups or dead letters.
        Role(
            "reviewer",
            "review queue: list, claim, release and decide cases; publish each final decision once",
            (
                f"~{cases}",
                f"~{queue}",
                f"~{history}",
                f"~{finals}",
                f"%W~{per_event}",
                f"&{per_event}",
                "-@all",
                *_CONNECT,
                *"+hgetall +hget +hset +hincrby +zrange +zrem +xadd +xrange +get +set +exists +expire".split(),
                "+publish",
                f"(%W~{decisions} +xadd)",
                # The final decision of an app's case goes to the app's feed too (write only).
                f"(%W~{feeds} +xadd)",
                # FCALL review_claim / review_release / review_decide (no EVAL, no SCRIPT LOAD).
                f"(~{decisions} ~{per_event} ~{cases} ~{queue} ~{history} ~{finals} ~{feeds} +fcall)",
            ),
        ),
        Role(
            "drift",
            "batch drift DAG: read recent signups, write the drift hash",
            (
                "~risk:drift:*",
                "-@all",
                *_CONNECT,
                *"+multi +exec +del +hset +hgetall".split(),
                f"(%R~{signups} +xrevrange)",  # risk/drift.py reads the newest entries backwards
            ),
        ),
        Role(
            "worker",
            "rq worker and archiver: rq's own keys and channels, the archive run lock, the old review history",
            (
                "~rq:*",
                f"~{_glob(archive_lock)}",
                "&rq:*",
                "-@all",
                *_CONNECT,
                # Derived from a real run (tests/unit/test_acl_derived.py): a long-running
                # `rq worker maintenance` and `rq cron archiver.cron` as this user, the weekly
                # archive job run by the worker (once refused by the held lock: rq's failure
                # path; once archiving runs and the review history), `onboarding-archive
                # worker-check`, both stopped by SIGTERM. No category grant, no key listing, no
                # function management, no DEL outside rq's keys and the lock.
                *"+blmove +lrange +lrem +rpush +sadd +smembers +srem +zadd +zrange +zrangebyscore +zrem".split(),
                *"+zremrangebyrank +zremrangebyscore +hgetall +hincrby +hincrbyfloat +hset".split(),
                *"+get +set +del +exists +expire +pexpire +persist +pttl +xadd +xrange".split(),
                *"+multi +exec +discard +watch +unwatch +subscribe +unsubscribe +info +client|info".split(),
                "+lmove",  # rq's burst mode (`rq worker --burst`, Worker.work(burst=True)) dequeues without blocking
                # rq's own Lua (rq/scripts.py: locks, unique enqueue) through redis-py's Script:
                # EVALSHA, SCRIPT LOAD after NOSCRIPT (a restarted Redis), SCRIPT EXISTS in
                # pipelines. Redis 7 has no per-script allow-list, so this role can still run a
                # script of its own, but on rq's keys only; no EVAL, no FUNCTION
                # (docs/security.md, busy scripts).
                *"+evalsha +script|load +script|exists".split(),
                # The weekly archive also moves the review history's old entries into the
                # store (archiver/review_history.py): read them, then delete exactly those.
                f"(~{history} +xrange +xdel)",
                # ... and the decision records (archiver/decision_records.py): the same, no XADD.
                f"(~{records} +xrange +xdel)",
            ),
        ),
        Role(
            "operator",
            "operators' tools: dead-letter replay, decisions view, onboarding-erase",
            (
                f"~{signups}",
                f"~{signups}:*",
                f"~{decisions}",
                f"~{decisions}:*",
                "-@all",
                *_CONNECT,
                # Derived from a real run (tests/unit/test_acl_derived.py): onboarding-deadletters
                # list/show/replay, onboarding-decisions, onboarding-erase (dry run and real).
                # Reads: the streams (XRANGE, XREVRANGE), a decision by event id (GET),
                # the awaiting conf (HSCAN, HEXISTS), the awaiting set (ZSCORE), a review
                # case's user (HGET), which keys exist.
                *"+xrange +xrevrange +get +hscan +hexists +hget +zscore +exists".split(),
                # ZREM, HDEL: an erased user's review cases, awaiting signups and their run conf.
                *"+scan +xdel +del +xadd +zrem +hdel".split(),
                # Erasure walks the service's keys with SCAN (a cursor); KEYS, not granted, would block Redis.
                # Dead-letter replay (listener/deadletters.py): FCALL replay_dead_letter.
                "+fcall",
                f"(~{intakes} +xrange +xdel)",  # onboarding-erase: an erased user's entries in the apps' intakes
            ),
        ),
        # The SLA service (sla/): its own consumer group on the decisions stream (XREADGROUP
        # updates the group, so read-write on the key but no XADD, XDEL or XTRIM: it cannot
        # change a decision), the accepted-signup set it clears, read-only depth and lag.
        Role(
            "sla",
            "SLA service: observe decisions through its group, clear awaiting signups, read lag and depth",
            (
                f"~{awaiting}",
                f"~{awaiting_conf}",
                "-@all",
                *_CONNECT,
                # Derived from a real run (tests/unit/test_acl_derived.py): the observer in burst
                # mode, the awaiting cleanup, a scrape of its collectors, the page.
                *"+zrem +zrangebyscore +zcard +hget +hdel +multi +exec".split(),
                # XRANGE: the page's charts re-read the last day once per process (sla/series.py).
                f"(~{decisions} +xgroup|create +xreadgroup +xack +xinfo|groups +xlen +xrange)",
                f"(%R~{signups} %R~{dead} +xinfo|groups +xlen)",
                f"(%R~{markers} +exists)",
                # The review queue's depth, age and overdue cases (the page and the metrics).
                f"(%R~{queue} %R~{cases} +zrange +zcard +zcount +zrangebyscore +hget +hgetall)",
                # Shadow scoring on the page (sla/shadow.py): the newest decision records, read only.
                f"(%R~{records} +xrevrange)",
            ),
        ),
        # KEDA's redis-streams scaler (deploy/k8s/listener.yaml): the listener group's lag and
        # the stream's length. No read of entries (XINFO STREAM shows the first and last entry, so
        # it is not granted): a leaked scaler password shows no application.
        Role(
            "scaler",
            "KEDA: the listener group's lag on signups, nothing else",
            (f"%R~{signups}", "-@all", *_CONNECT, "+xinfo|groups", "+xlen", "+xpending"),
        ),
        # The realtime Airflow's Celery broker (kombu's Redis transport): the task queue, kombu's
        # bindings and unacked bookkeeping, the control (pidbox) and event channels (TIME: kombu's
        # fanout-binding scripts). None of the service's keys: a leaked broker password reads no
        # signup and forges no decision.
        Role(
            "broker",
            "Airflow Celery broker: task queues, kombu bindings and acks, control and event channels",
            (
                f"~{_glob(CELERY_QUEUE)}*",
                "~_kombu.*",
                "~unacked*",
                "~*.celery.pidbox*",  # each worker's control queue and the replies to a broadcast
                "~celeryev.*",  # the workers' event queues (gossip)
                "&/*",
                # A worker PSUBSCRIBEs to the broadcast channel `/<db>.celery.pidbox` and to the
                # other workers' events `/<db>.celeryev/worker.*`; Redis checks a PSUBSCRIBE
                # pattern literally: one of each per database the broker may use.
                *(f"&/{db}.celery.pidbox" for db in range(16)),
                *(f"&/{db}.celeryev/worker.*" for db in range(16)),
                "-@all",
                *_CONNECT,
                # Derived from a real run (tests/unit/test_acl_derived.py): a Celery worker as
                # `airflow celery worker` runs it (gossip, mingle, heartbeats), the CeleryExecutor's
                # apply_async of execute_workload consumed and run, the chart's liveness probe
                # (`celery inspect ping`) answered, a warm shutdown, and kombu restoring a message
                # a dead worker held (restore_visible, under its lock). No category grant.
                *"+brpop +lpush +rpush +llen +sadd +smembers +srem +hset +hget +hdel".split(),
                *"+zadd +zrange +zrangebyscore +zrem +get +set +del +multi +exec +discard +watch".split(),
                *"+publish +psubscribe +punsubscribe +time".split(),
                # kombu's binding scripts (kombu/transport/redis.py: REFRESH_BINDING, SWEEP_BINDINGS)
                # through redis-py's Script: EVALSHA and SCRIPT LOAD/EXISTS, on kombu's keys only;
                # no EVAL, no FUNCTION (docs/security.md, busy scripts).
                *"+evalsha +script|load +script|exists".split(),
            ),
        ),
        *(app_role(s, app) for app in s.apps),
    ]


def app_role(streams: StreamSettings, app: str) -> Role:
    """One product app's own user `app-<name>` (ONBOARDING_APPS; docs/security.md, per-app
    isolation): XADD to its own intake stream only, read only its own decisions by event id
    (keys and channels under `<decisions>:event:<name>:`), and read its own decision feed
    `<decisions>:app:<name>` and refusals feed `<decisions>:app:<name>:refusals` through its
    own consumer groups (what the clients' `feed` and `answers` run: XGROUP CREATE, XREADGROUP,
    XACK). No read of the shared streams, of another app's decisions or feeds, or of the SLA's
    group: what it can damage is its own intake and feeds."""
    intake = _glob(keys.intake_stream(streams.signups_stream, app))
    mine = keys.app_decision_pattern(_glob(streams.decisions_stream), app)
    feed = keys.app_feed_stream(_glob(streams.decisions_stream), app)
    refusals = keys.app_refusals_stream(_glob(streams.decisions_stream), app)
    return Role(
        f"app-{app}",
        f"product app {app}: add signups to its own intake, read its own decisions by event id and its own feed",
        (
            f"%W~{intake}",
            f"%R~{mine}",
            f"&{mine}",
            "-@all",
            *_CONNECT,
            *"+xadd +get +subscribe +unsubscribe".split(),
            # XREADGROUP moves the group's cursor, so the key is read-write; no XADD, XDEL, XTRIM
            # or XRANGE there (selectors bind these commands to the feed alone).
            f"(~{feed} ~{refusals} +xgroup|create +xreadgroup +xack)",
        ),
    )


def password_for(role: str, environ: Mapping[str, str]) -> str | None:
    """REDIS_ACL_PASSWORD_<ROLE>; an app's user `app-web`: REDIS_ACL_PASSWORD_APP_WEB."""
    return Env(environ).secret(f"REDIS_ACL_PASSWORD_{role.upper().replace('-', '_')}")


def acl_rule(role: Role, password: str | None) -> list[str]:
    """The ACL SETUSER arguments after the name; the password only as its sha256 (`#<hash>`)."""
    auth = ["on", f"#{hashlib.sha256(password.encode()).hexdigest()}"] if password else ["off"]
    return ["reset", *auth, *role.rules]


# The Redis server's own users, for `render --server` (the file a Redis pod loads with
# `aclfile`): the operators' administrator and the replica's replication user. Not part of
# `apply`, which runs as the administrator on a server that has them already.
SERVER_ROLES = (
    Role("admin", "Redis administrator: operators only, never a component", ("~*", "&*", "+@all")),
    Role("replica", "replication: the replica's link to the primary", ("-@all", *_CONNECT, "+psync", "+replconf")),
    Role("probe", "the Redis pods' own health checks: PING, nothing else", ("-@all", *_CONNECT)),
)


def render(streams: StreamSettings, environ: Mapping[str, str], user_prefix: str = "", server: bool = False) -> str:
    """An ACL file, one `user` line per role. Redis' ACL file format has no comments (a `#`
    line aborts the server's start), so the roles' purposes stay in this module. `server`:
    the whole file a Redis server loads, with its administrator, replication and probe
    users and the default user disabled (an unauthenticated client gets NOAUTH)."""
    lines = []
    for role in [*roles(streams), *(SERVER_ROLES if server else ())]:
        lines.append(" ".join(["user", f"{user_prefix}{role.name}", *acl_rule(role, password_for(role.name, environ))]))
    if server:
        lines.append("user default reset off")
    return "\n".join(lines) + "\n"


def apply(client: object, streams: StreamSettings, environ: Mapping[str, str], user_prefix: str = "") -> list[str]:
    """ACL SETUSER every role on a running Redis (the client must be allowed to); returns the users."""
    names = []
    for role in roles(streams):
        rule = acl_rule(role, password_for(role.name, environ))
        client.execute_command("ACL", "SETUSER", f"{user_prefix}{role.name}", *rule)  # type: ignore[attr-defined]
        names.append(f"{user_prefix}{role.name}")
    return names


def _write_private(path: Path, text: str) -> None:
    """Atomically, readable by the owner only (the file holds password hashes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-redis-acl",
        description=__doc__.split("\n\n")[0],
        epilog=environment_epilog(
            (
                "REDIS_ACL_PASSWORD_<ROLE>[_FILE]",
                "REDIS_ACL_PASSWORD_APP_<NAME>[_FILE]",
                "REDIS_URL",
                "SIGNUPS_STREAM",
                "DECISIONS_STREAM",
                "DEAD_LETTER_STREAM",
                "ONBOARDING_APPS",
                "ONBOARDING_HOME",
            ),
            note="ROLE: each role of `onboarding-redis-acl render`; docs/security.md",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    render_cmd = sub.add_parser("render", help="print an ACL file (passwords hashed) for Redis' aclfile")
    render_cmd.add_argument(
        "--server",
        action="store_true",
        help="the server's whole file: also the admin, replica and probe users (REDIS_ACL_PASSWORD_ADMIN, "
        "_REPLICA, _PROBE) and the default user off",
    )
    render_cmd.add_argument("--output", metavar="PATH", help="write the file here (mode 0600) instead of stdout")
    apply_cmd = sub.add_parser("apply", help="create/update the users on a running Redis")
    apply_cmd.add_argument("--url", required=True, help="an admin connection URL (ACL SETUSER, FUNCTION LOAD)")
    load_cmd = sub.add_parser("load-functions", help="load the service's Redis Functions on a running Redis")
    load_cmd.add_argument("--url", required=True, help="an admin connection URL (FUNCTION LIST, FUNCTION LOAD)")
    args = parser.parse_args(argv)
    streams = StreamSettings.from_env()
    if args.command == "render":
        text = render(streams, os.environ, server=args.server)
        if args.output:
            _write_private(Path(args.output), text)
            enabled = sum(1 for line in text.splitlines() if line.startswith("user ") and " on " in line)
            print(f"wrote {args.output}: {enabled} users enabled")
        else:
            sys.stdout.write(text)
        return 0
    from onboarding.functions import LIBRARY, ensure_loaded
    from onboarding.redis_clients import Role, connect  # redis only when applying

    client = connect(args.url, Role.CLI)
    # The functions first: a user enabled by `apply` finds what it may FCALL.
    loaded = ensure_loaded(client)
    print(f"redis functions {LIBRARY}: {'loaded' if loaded else 'already loaded'}")
    from onboarding import intake  # the per-app intake forwarder, its own library

    loaded = intake.ensure_loaded(client)
    print(f"redis functions {intake.LIBRARY}: {'loaded' if loaded else 'already loaded'}")
    if args.command == "apply":
        for name in apply(client, streams, os.environ):
            print(f"redis user {name} set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
