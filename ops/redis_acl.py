"""Redis ACL users: each component gets the keys and commands its job needs, nothing else.

A leaked credential then does little: the app's password cannot read signups, the
listener's cannot forge decisions, the publisher's cannot read applications, the rq
worker's cannot touch the streams. Rules are built from the stream names (StreamSettings),
so a deployment with other names gets matching rules.

    onboarding-redis-acl render            # the roles' users (hashed passwords)
    onboarding-redis-acl render --server   # a Redis server's whole `aclfile` (deploy/k8s/redis.yaml)
    onboarding-redis-acl apply --url URL   # ACL SETUSER on a running Redis, as an admin

Passwords come from REDIS_ACL_PASSWORD_<ROLE> or, for Kubernetes Secrets mounted as
files, REDIS_ACL_PASSWORD_<ROLE>_FILE (ROLE: APP, LISTENER, PUBLISHER, DRIFT, WORKER, OPERATOR,
SLA, SCALER, BROKER; with --server also ADMIN, REPLICA and PROBE). A role without a password is
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
    return [
        Role(
            "app",
            "product app: add signups, read decisions (the stream, or one by event id and its announcement)",
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
            "signup listener: consume signups, fingerprints, dead letters, trim both streams, drift gauge",
            (
                f"~{signups}",
                f"~{fingerprints}",
                "-@all",
                *_CONNECT,
                *"+multi +exec +discard +exists +set +xgroup|create +xreadgroup +xack +xautoclaim +xclaim".split(),
                *"+xpending +xinfo|groups +xtrim".split(),
                # Selectors bind commands to keys: XADD only to the dead letters, so a leaked
                # listener password cannot forge a decision; retention trims the decisions.
                f"(%W~{dead} +xadd)",
                f"(~{decisions} +xtrim +xinfo|groups +xpending +exists)",
                "(%R~risk:drift:* +hgetall)",
                # Records each accepted signup for overdue detection (onboarding/awaiting.py):
                # one script, unless its decision is already out. EVAL declares its keys
                # read-write; inside, only EXISTS may touch a marker (no SET or GET).
                f"(~{awaiting} ~{awaiting_conf} ~{markers} +eval +exists +zadd +hsetnx)",
            ),
        ),
        Role(
            "publisher",
            "onboarding DAG tasks: publish each decision once (Lua: GET marker, XADD, SET marker and "
            "the per-event key, PUBLISH on its channel)",
            # Commands a script calls are checked against the caller's ACL too (Redis 7).
            # EVAL declares both keys, so it needs a selector holding both; the commands inside
            # still need their own grants, and there is none for reading the decisions.
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
                f"(~{decisions} ~{markers} ~{per_event} +eval)",
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
                f"(%R~{signups} +xrange +xrevrange)",
            ),
        ),
        Role(
            "worker",
            "rq worker and archiver: rq's own keys and channels, the archive run lock",
            (
                "~rq:*",
                f"~{_glob(archive_lock)}",
                "&rq:*",
                "-@all",
                *_CONNECT,
                *"+@read +@write +@list +@hash +@set +@sortedset +@string +@keyspace +@transaction".split(),
                *"+@scripting +@pubsub +@connection -@dangerous -script|flush -script|kill +info".split(),
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
                *"+@read +scan +xdel +del +xadd +eval".split(),
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
                *"+zrem +zrangebyscore +zcard +hget +hdel +multi +exec".split(),
                f"(~{decisions} +xgroup|create +xreadgroup +xack +xautoclaim +xpending +xinfo|groups +xlen +xrange"
                " +xrevrange)",
                f"(%R~{signups} %R~{dead} +xinfo|groups +xpending +xlen)",
                f"(%R~{markers} +exists)",
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
                *"+@read +@write +@list +@hash +@set +@sortedset +@string +@keyspace +@transaction".split(),
                *"+@scripting +@pubsub +@connection -@dangerous -script|flush -script|kill +info +time".split(),
            ),
        ),
    ]


def password_for(role: str, environ: Mapping[str, str]) -> str | None:
    return Env(environ).secret(f"REDIS_ACL_PASSWORD_{role.upper()}")


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
    parser = argparse.ArgumentParser(prog="onboarding-redis-acl", description=__doc__.split("\n\n")[0])
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
    apply_cmd.add_argument("--url", required=True, help="an admin connection URL (ACL SETUSER)")
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
    import redis

    client = redis.Redis.from_url(args.url)
    for name in apply(client, streams, os.environ):
        print(f"redis user {name} set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
