"""The Helm values of both Airflow releases against the official chart's full values schema
(the one packaged in the vendored chart release, offline: deploy/helm/vendor/README.md), and
the production set-up the chart cannot check: credentials only from Secrets by name, one
Redis ACL user per role, the access Job, StatsD mapped as Prometheus expects, fast TCP
failover on the latency-critical pods."""

from __future__ import annotations

import hashlib
import tarfile
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ops import redis_acl
from tests.deploy import chart

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
INSTANCES = ("realtime", "batch")
# Which pods may reach Redis, as which ACL user (ops/redis_acl.py). Keys: where in the values.
REDIS_USERS = {
    "realtime": {
        "workers": "publisher",  # the onboarding task publishes its decision
        "dagProcessor": "publisher",  # the DAG's failure callback publishes `review` (Airflow 3 runs it there)
    },
    "batch": {"workers": "drift"},  # the drift DAG reads signups and writes the drift hash
}
TCP_RTO_SYSCTL = {"name": "net.ipv4.tcp_rto_max_ms", "value": "5000"}


@cache
def schema() -> dict[str, Any]:
    return chart.values_schema()


def values(instance: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((HELM_DIR / f"{instance}-values.yaml").read_text())
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema())
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]
    # The schema's top level is open: Helm would ignore a misspelt top-level key silently.
    errors += [f"$.{key}: not a value of the chart" for key in sorted(set(document) - set(schema()["properties"]))]
    return errors


def test_the_vendored_chart_is_the_recorded_release_and_the_docs_pin_it() -> None:
    assert hashlib.sha256(chart.CHART.read_bytes()).hexdigest() == chart.CHART_SHA256, "see vendor/README.md"
    with tarfile.open(chart.CHART) as archive:
        member = archive.extractfile("airflow/Chart.yaml")
        assert member is not None
        assert yaml.safe_load(member.read())["version"] == chart.CHART_VERSION
    jsonschema.Draft7Validator.check_schema(schema())
    # The install lines a reader copies name the same chart version.
    for path in [*(HELM_DIR / f"{i}-values.yaml" for i in INSTANCES), ROOT / "docs" / "operations.md"]:
        lines = [line for line in path.read_text().splitlines() if "helm upgrade --install" in line]
        assert lines and all(f"--version {chart.CHART_VERSION}" in line for line in lines), path.name


def test_the_schema_resolves_without_network() -> None:
    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for child in node.values():
                yield from refs(child)
        elif isinstance(node, list):
            for child in node:
                yield from refs(child)

    found = set(refs(schema()))
    assert found and all(ref.startswith("#/definitions/") for ref in found), sorted(found)
    assert {ref.removeprefix("#/definitions/") for ref in found} <= set(schema()["definitions"])


@pytest.mark.parametrize("instance", INSTANCES)
def test_values_validate_against_the_chart_schema(instance: str) -> None:
    errors = schema_errors(values(instance))
    assert not errors, f"{instance}-values.yaml:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("workers", "replica"), 2),  # misspelt component key
        (("workers", "replicas"), "two"),  # wrong type
        (("scheduler", "securityContexts", "pod", "sysctls"), [{"name": "x"}]),  # Kubernetes definition
        (("redisUrl",), "redis://x"),  # misspelt top-level key
    ],
    ids=["misspelt-key", "wrong-type", "k8s-definition", "unknown-top-level"],
)
def test_the_schema_check_rejects_broken_values(path: tuple[str, ...], bad: object) -> None:
    broken = values("realtime")
    node = broken
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = bad
    assert schema_errors(broken)


@pytest.mark.parametrize("instance", INSTANCES)
def test_credentials_come_from_secrets_by_name(instance: str) -> None:
    v = values(instance)
    for key, suffix in {
        "fernetKeySecretName": "fernet",
        "jwtSecretName": "jwt",
        "apiSecretKeySecretName": "api-secret-key",
    }.items():
        assert v[key] == f"{instance}-airflow-{suffix}", key
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        assert v["data"][key].startswith(f"{instance}-airflow-"), key
    for inline in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert v.get(inline) is None, f"{inline}: a credential in the values file"
    assert "brokerUrl" not in v["data"] and "metadataConnection" not in v["data"]
    # The chart puts the JWT secret and session key into every Airflow container itself; a
    # second definition through `secret:`/`env:` would race it.
    env_names = {item["envName"] for item in v.get("secret", [])} | {item["name"] for item in v.get("env", [])}
    assert not env_names & {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"}


def _redis_urls(node: object, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("name") == "REDIS_URL" or node.get("envName") == "REDIS_URL":
            yield where, node
        for key, child in node.items():
            yield from _redis_urls(child, (*where, str(key)))
    elif isinstance(node, list):
        for child in node:
            yield from _redis_urls(child, where)


@pytest.mark.parametrize("instance", INSTANCES)
def test_redis_urls_are_per_role_secrets_for_the_pods_that_need_them(instance: str) -> None:
    found: dict[str, dict[str, Any]] = {}
    for where, env in _redis_urls(values(instance)):
        assert where[-1] == "env" and len(where) == 2, f"REDIS_URL at {where}: only a component's own env"
        ref = env["valueFrom"]["secretKeyRef"]
        found[where[0]] = ref
    assert {component: ref["name"] for component, ref in found.items()} == {
        component: f"onboarding-redis-{role}" for component, role in REDIS_USERS[instance].items()
    }
    assert all(ref["key"] == "url" for ref in found.values())
    assert set(REDIS_USERS[instance].values()) <= {role.name for role in redis_acl.roles()}


def test_the_celery_brokers_are_separate_and_have_an_acl_user() -> None:
    brokers = {values(instance)["data"]["brokerUrlSecretName"] for instance in INSTANCES}
    assert len(brokers) == len(INSTANCES)
    assert "broker" in {role.name for role in redis_acl.roles()}


def test_the_access_job_runs_onboarding_access_as_its_service_account() -> None:
    job = values("realtime")["createUserJob"]
    assert job["command"] == ["onboarding-access"]
    assert job["args"] == ["--listener-secret", "onboarding-airflow-listener", "--sla-secret", "onboarding-airflow-sla"]
    assert job["serviceAccount"] == {"create": False, "name": "onboarding-access", "automountServiceAccountToken": True}
    assert job["applyCustomEnv"] is False  # no Redis credential, no model in the Job
    assert job["env"] == [
        {
            "name": "ACCESS_ADMIN_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "realtime-airflow-admin", "key": "password"}},
        },
        # The api-servers do not sync FAB permissions at start; the Job must (as stack/instance.py does).
        {"name": "AIRFLOW__FAB__UPDATE_FAB_PERMS", "value": "True"},
    ]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["onboarding-access"] == "ops.access:main"
    rbac = (ROOT / "deploy" / "k8s" / "access-rbac.yaml").read_text()
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rbac) if d}
    assert ("ServiceAccount", "onboarding-access") in docs
    rules = docs[("Role", "onboarding-access")]["rules"]
    assert [r["resourceNames"] for r in rules] == [["onboarding-airflow-listener", "onboarding-airflow-sla"]]


def test_batch_has_no_fab_user_job_and_a_shared_admin_password() -> None:
    v = values("batch")
    assert v["apiServer"]["defaultUser"]["enabled"] is False
    assert v["webserver"]["defaultUser"]["enabled"] is False
    path = Path(v["config"]["core"]["simple_auth_manager_passwords_file"])
    mounts = {m["name"]: m for m in v["apiServer"]["extraVolumeMounts"]}
    volume = next(vol for vol in v["apiServer"]["extraVolumes"] if vol["secret"]["secretName"] == "batch-airflow-admin")
    assert Path(mounts[volume["name"]]["mountPath"]) == path.parent and mounts[volume["name"]]["readOnly"]


@pytest.mark.parametrize("component", ["workers", "scheduler", "apiServer", "dagProcessor"])
def test_latency_critical_pods_give_up_on_a_dead_tcp_peer_within_5_s(component: str) -> None:
    pod = values("realtime")[component]["securityContexts"]["pod"]
    assert TCP_RTO_SYSCTL in pod["sysctls"]
    # The component's pod context replaces the chart's default one: keep its user and hardening.
    assert pod["runAsUser"] == 50000 and pod["runAsNonRoot"] is True and pod["fsGroup"] == 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_realtime_image_keeps_its_local_settings() -> None:
    """The chart mounts its airflowLocalSettings over $AIRFLOW_HOME/config/airflow_local_settings.py
    unless null; the image's (deploy/realtime) warms the model before the workers fork."""
    assert values("realtime")["airflowLocalSettings"] is None


@pytest.mark.parametrize("instance", INSTANCES)
def test_statsd_goes_to_the_charts_exporter_mapped_as_prometheus_expects(instance: str) -> None:
    v = values(instance)
    metrics = v["config"]["metrics"]
    assert v["statsd"]["enabled"] is True and metrics["statsd_on"] == "True"
    assert "statsd_host" not in metrics  # the chart's default: this release's statsd Service
    ingest = v.get("ports", {}).get(
        "statsdIngest", schema()["properties"]["ports"]["properties"]["statsdIngest"]["default"]
    )
    assert int(metrics["statsd_port"]) == ingest
    assert metrics["statsd_influxdb_enabled"] == "True"
    mapping = yaml.safe_load((ROOT / "deploy" / "prometheus" / "statsd-mapping.yml").read_text())
    # The chart renders `mappings:` only, so the file's defaults must be in every rule.
    expected = [{**mapping["defaults"], **rule} for rule in mapping["mappings"]]
    assert v["statsd"]["overrideMappings"] == expected
    assert all(rule["match"].startswith(metrics["statsd_prefix"] + ".") for rule in expected)


def _env_named(node: object, name: str, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    if isinstance(node, dict):
        if node.get("name") == name:
            yield where, node
        for key, child in node.items():
            yield from _env_named(child, name, (*where, str(key)))
    elif isinstance(node, list):
        for child in node:
            yield from _env_named(child, name, where)


def test_only_the_batch_workers_hold_the_model_signing_key_and_realtime_verifies_with_the_public_key() -> None:
    """docs/security.md C15: the private key signs versions where they are trained (the batch
    workers); every realtime process (the scheduler warms the model, the workers load it)
    gets only the public key, and both refuse the published development key."""
    batch, realtime = values("batch"), values("realtime")
    private = [
        (where, env) for instance in (batch, realtime) for where, env in _env_named(instance, "MODEL_SIGNING_KEY")
    ]
    assert [(where, env["valueFrom"]["secretKeyRef"]) for where, env in private] == [
        (("workers", "env"), {"name": "onboarding-model-signing", "key": "private"})
    ]
    assert private[0][1] in batch["workers"]["env"]
    assert not list(_env_named(batch, "MODEL_VERIFY_KEY")) and not list(_env_named(realtime, "MODEL_VERIFY_KEY"))
    assert realtime["secret"] == [
        {"envName": "MODEL_VERIFY_KEY", "secretName": "onboarding-model-signing", "secretKey": "public"}
    ]
    assert not [item for item in batch.get("secret", []) if item["envName"].startswith("MODEL_")]
    for instance, place in ((batch, batch["workers"]["env"]), (realtime, realtime["env"])):
        assert {"name": "MODEL_SIGNING_REQUIRE_KEY", "value": "true"} in place
