"""The production path in containers: both images built on this machine (scripts/images.py),
the realtime Airflow (api-server, scheduler, dag-processor) from the Airflow image on
PostgreSQL, a listener, the SLA service and the rq worker from the service image, all with
the host's network and Redis; one signup published, its decision read back and seen by the
SLA service.

Each container runs as the image and the manifests/chart run it: the image's own user and
entrypoint, the chart's `args` for the Airflow components (`bash -c "exec airflow ..."`
through /entrypoint) and its liveness commands; the service containers as deploy/k8s/
describes them (args, user, read-only root filesystem, dropped capabilities, Secrets as
files at their paths, probes), read from the manifests. Skips only
where no container can run here (with podman's error); a failed build fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets as secrets_module
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from onboarding import intake
from onboarding.airflow import AirflowClient, AirflowSettings
from onboarding.decision import DecisionEvent
from onboarding.errors import AirflowError
from onboarding.functions import ensure_loaded
from onboarding.publisher import publish_signup
from risk.samples import new_signup
from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database, ensure_postgres_database
from testkit.containers import Container, Images, ManifestContainer, built_images, podman, run_once
from testkit.postgres import postgres_available
from testkit.realtime import E2E_REDIS_URL
from testkit.services import free_port, require
from tests.e2e.conftest import CONTAINERS

pytestmark = [pytest.mark.e2e, pytest.mark.containers]

PREFIX = "containers"
STREAMS = {
    "SIGNUPS_STREAM": f"{PREFIX}:signups",
    "DECISIONS_STREAM": f"{PREFIX}:decisions",
    "DEAD_LETTER_STREAM": f"{PREFIX}:signups:dead",
}
SECRETS = "/run/secrets/onboarding"  # where the Airflow containers get their config file
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
NAME = f"onboarding-e2e-{os.getpid()}"  # the containers' names: one test session's own


@pytest.fixture(scope="module")
def images() -> Images:
    started = time.monotonic()
    found = built_images()
    CONTAINERS.append(
        f"images: built or reused in {time.monotonic() - started:.0f} s "
        f"(scripts/images.py build: {found.seconds:.0f} s)"
    )
    for name in ("python-base", "airflow-base", "onboarding", "onboarding-airflow"):
        image = found.images[name]
        how = "reused" if image["reused"] else f"built in {image['seconds']:.0f} s"
        CONTAINERS.append(f"  {name:20} {image['size_bytes'] / 1e6:5.0f} MB  {how}  {image['tag']}")
    return found


def _readable_copy(source: Path, target: Path) -> Path:
    """A copy every container user can read (pytest's temporary directories are 0700)."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    for path in [target, *target.rglob("*")] if target.is_dir() else [target]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def _wait(what: str, ready: object, containers: list[Container], timeout_s: float = 240) -> float:
    started = time.monotonic()
    deadline = started + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        for container in containers:
            container.assert_running()
        try:
            last = ready()  # type: ignore[operator]
            if last is True:
                return time.monotonic() - started
        except (httpx.HTTPError, OSError) as err:
            last = err
        time.sleep(0.5)
    logs = "\n".join(f"--- {c.name} ---\n{c.logs(40)}" for c in containers)
    raise AssertionError(f"{what} not ready after {timeout_s:.0f} s ({last!r}):\n{logs}")


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {E2E_REDIS_URL}")
    ensure_loaded(client)  # the service's Redis Functions, as the deploy Job loads them
    intake.ensure_loaded(client)
    for key in client.scan_iter(f"{PREFIX}:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(f"{PREFIX}:*"):
        client.delete(key)
    client.close()


def test_a_signup_is_decided_by_the_images_running_as_containers(
    images: Images, redis_client: redis.Redis, tmp_path: Path, trained_model_dir: Path
) -> None:
    require(postgres_available(), "PostgreSQL on 127.0.0.1:5432")
    # The service image is the service extra only: no Airflow, no model libraries.
    present = run_once(
        images.service,
        ["python", "-c", "import importlib.util as u; print([m for m in "
         "('airflow', 'sklearn', 'numpy', 'scipy', 'matplotlib', 'skops', 'celery') if u.find_spec(m)])"],
        {},
    )  # fmt: skip
    assert present.strip() == "[]", present
    users = {
        name: podman("image", "inspect", "--format", "{{.Config.User}}", getattr(images, name)).stdout.strip()
        for name in ("service", "airflow")
    }
    assert users == {"service": "10001:10001", "airflow": "50000:0"}, users

    # The metadata database, named by a plain postgresql:// URL as the chart's Secret names it
    # (SQLAlchemy 2.1 picks psycopg 3 for it: the airflow extra must bring it).
    database_url = f"postgresql://postgres@127.0.0.1:5432/onboarding_containers_{os.getpid()}"
    drop_postgres_database(database_url)
    ensure_postgres_database(database_url)
    # Secrets and the instance config as the local stack makes them; then copied where the
    # containers' users can read them, as a Secret or ConfigMap is mounted.
    spec = InstanceSpec.from_deploy("realtime", tmp_path / "realtime", free_port(), free_port(), database_url)
    instance = AirflowInstance(spec, {})
    instance.prepare()
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    _readable_copy(spec.config_file, mounted / "airflow.cfg")
    models = _readable_copy(trained_model_dir, tmp_path / "models")
    airflow_env = {
        **{key: value for key, value in instance.env().items() if key.startswith("AIRFLOW__")},
        "AIRFLOW_CONFIG": f"{SECRETS}/airflow.cfg",
        "AIRFLOW__CORE__DAGS_FOLDER": "/opt/onboarding/dags/realtime",  # the image's (Helm: dags.mountPath)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "REDIS_URL": E2E_REDIS_URL,
        "RISK_MODEL_DIR": "/models",
        **STREAMS,
    }
    airflow_env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", None)
    airflow_mounts = ["-v", f"{mounted}:{SECRETS}:ro", "-v", f"{models}:/models:ro"]
    containers: list[Container] = []
    started = time.monotonic()
    try:
        # The chart's migration Job, then its user Job (command onboarding-access, ACCESS_* passwords).
        run_once(images.airflow, ["bash", "-c", "exec airflow db migrate"], airflow_env, *airflow_mounts)
        secrets = json.loads((spec.home / "secrets.json").read_text())
        run_once(
            images.airflow,
            [],
            {
                **airflow_env,
                "ACCESS_ADMIN_PASSWORD": secrets["admin_password"],
                "ACCESS_LISTENER_PASSWORD": secrets["listener_password"],
                "ACCESS_SLA_PASSWORD": secrets["sla_password"],
                "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
            },
            *airflow_mounts,
            "--entrypoint",
            "onboarding-access",
        )
        prepared = time.monotonic() - started
        for component in ("api-server", "scheduler", "dag-processor"):
            containers.append(
                Container(
                    f"{NAME}-{component}",
                    images.airflow,
                    ["bash", "-c", f"exec airflow {component}"],  # the chart's args
                    airflow_env,
                    *airflow_mounts,
                )
            )
        admin = AirflowClient(AirflowSettings(url=spec.api_url, username="admin", password=secrets["admin_password"]))

        def airflow_ready() -> object:
            if not _ok(f"{spec.api_url}/api/v2/version"):  # the chart's api-server probes
                return "api-server"
            if not _ok(f"http://127.0.0.1:{spec.scheduler_health_port}/health"):
                return "scheduler health"
            try:
                errors = admin.import_errors()
                assert not errors, errors
                return admin.get_dag("onboarding").get("is_paused") is False or "paused"
            except AirflowError as err:  # not up or not parsed yet
                return repr(err)

        airflow_s = _wait("realtime Airflow", airflow_ready, containers, timeout_s=420)  # 2 busy cores: 46-146 s seen
        admin.close()

        # The listener, the SLA service and the rq worker as their manifests run them: args,
        # literal env, user, read-only root filesystem, dropped capabilities, Secrets as files
        # at the manifests' paths; only what differs on one host is set here (URLs, ports).
        page_token = secrets_module.token_urlsafe(24)
        secret_values = {
            ("onboarding-airflow-listener", "password"): secrets["listener_password"],
            ("onboarding-airflow-sla", "password"): secrets["sla_password"],
            ("onboarding-sla-page", "token"): page_token,
        }
        here = {"REDIS_URL": E2E_REDIS_URL, **STREAMS, "AIRFLOW_API_URL": spec.api_url}
        listener_port, sla_port = free_port(), free_port()
        services = {
            "listener": (
                ManifestContainer.read(K8S / "listener.yaml", "listener"),
                {"LISTENER_METRICS_HOST": "127.0.0.1", "LISTENER_METRICS_PORT": str(listener_port),
                 "LISTENER_CONSUMER": "containers-1"},
            ),
            "sla": (
                ManifestContainer.read(K8S / "sla.yaml", "sla"),
                {"SLA_HOST": "127.0.0.1", "SLA_PORT": str(sla_port), "SLA_CONSUMER": "containers-1",
                 "SLA_AIRFLOW_INSTANCES": f"realtime={spec.api_url}"},
            ),
            "rq-worker": (ManifestContainer.read(K8S / "rq.yaml", "worker"), {}),
            "rq-cron": (ManifestContainer.read(K8S / "rq.yaml", "cron"), {}),  # the worker's probe wants it
        }  # fmt: skip
        for name, (manifest, overrides) in services.items():
            env = {**manifest.env, **here, **overrides}
            options = [*manifest.options, *manifest.secret_mounts(secret_values, tmp_path / "secrets")]
            containers.append(Container(f"{NAME}-{name}", images.service, manifest.argv(env), env, *options))
        for name, port in (("listener", listener_port), ("sla", sla_port)):
            probes = services[name][0].probes
            for probe in ("livenessProbe", "readinessProbe"):
                url = f"http://127.0.0.1:{port}{probes[probe]['httpGet']['path']}"
                _wait(f"{name} {probe}", lambda url=url: _ok(url), containers, 60)
        up_s = time.monotonic() - started

        event = new_signup(rng=random.Random(30))
        published = time.monotonic()
        publish_signup(redis_client, STREAMS["SIGNUPS_STREAM"], event)
        decision: DecisionEvent | None = None
        deadline = published + 120
        while decision is None and time.monotonic() < deadline:
            for _id, fields in redis_client.xrange(STREAMS["DECISIONS_STREAM"]):
                decision = DecisionEvent.from_dict(json.loads(fields[b"payload"]))
            if decision is None:
                for container in containers:
                    container.assert_running()
                time.sleep(0.2)
        decided_s = time.monotonic() - published
        assert decision is not None, "no decision in 120 s:\n" + "\n".join(
            f"--- {c.name} ---\n{c.logs(30)}" for c in containers
        )
        assert decision.event_id == event["event_id"] and decision.user_id == event["user_id"]
        assert decision.decision in ("approve", "review", "decline") and decision.error is None
        assert decision.model_version and decision.run_id == f"signup__{event['event_id']}"

        # The SLA service in its container observed it (its /metrics, which Prometheus scrapes).
        wanted = re.compile(rf'^onboarding_decisions_total\{{decision="{decision.decision}",[^}}]*\}} 1\.0$', re.M)
        _wait("the SLA service's count", lambda: bool(wanted.search(
            httpx.get(f"http://127.0.0.1:{sla_port}/metrics", timeout=2).text)), containers, 30)  # fmt: skip

        # The chart's liveness commands, in the running Airflow containers.
        for component, job in (("scheduler", "SchedulerJob"), ("dag-processor", "DagProcessorJob")):
            probe = next(c for c in containers if c.name.endswith(component)).exec(
                "sh", "-c", "CONNECTION_CHECK_MAX_COUNT=0 AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR exec /entrypoint "
                f"airflow jobs check --job-type {job} --local",
            )  # fmt: skip
            assert probe.returncode == 0, (component, probe.stdout + probe.stderr)
        # The rq worker's exec liveness probe (deploy/k8s/rq.yaml): a worker and `rq cron` run.
        worker = next(c for c in containers if c.name.endswith("rq-worker"))
        command = services["rq-worker"][0].probes["livenessProbe"]["exec"]["command"]
        _wait("rq worker liveness", lambda: worker.exec(*command).returncode == 0, containers, 60)
        # The SLA page asks for the mounted token (the metrics above did not).
        api = f"http://127.0.0.1:{sla_port}/api/sla"
        assert httpx.get(api, timeout=5).status_code == 401
        assert httpx.get(api, headers={"Authorization": f"Bearer {page_token}"}, timeout=5).status_code == 200
        uids = {c.name.removeprefix(f"{NAME}-"): c.exec("id", "-u").stdout.strip() for c in containers}
        airflow_uid, service_uid = (
            {"api-server", "scheduler", "dag-processor"},
            {"listener", "sla", "rq-worker", "rq-cron"},
        )
        assert uids == {**dict.fromkeys(airflow_uid, "50000"), **dict.fromkeys(service_uid, "10001")}, uids

        latency = decision.latency_s("accepted_at", "published_at")
        CONTAINERS.append(
            f"airflow db migrate + onboarding-access in containers: {prepared:.0f} s; "
            f"Airflow ready {airflow_s:.0f} s later; all seven containers up in {up_s:.0f} s"
        )
        CONTAINERS.append(
            f"signup {event['event_id']}: {decision.decision} (score {decision.score:.3f}, model "
            f"{decision.model_version}) {decided_s:.2f} s after XADD, {latency:.2f} s accepted -> published; "
            "counted by the SLA service"
        )
    finally:
        for container in reversed(containers):
            container.remove()
        drop_postgres_database(database_url)
