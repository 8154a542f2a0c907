"""Every production manifest validates: Kubernetes objects against the Kubernetes JSON
schemas (kubernetes-validate, offline, strict: unknown fields fail), KEDA objects against
the CRD schemas vendored in tests/deploy/schemas/ (the Helm values against the chart's
schema: test_helm_values.py). And the manifests agree with the code:
probes hit the listener's health check, KEDA watches the listener's stream and group, no
secret is written in clear."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from listener.settings import ListenerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
HELM_DIR = ROOT / "deploy" / "helm"
SCHEMAS = Path(__file__).parent / "schemas"
KUBERNETES_VERSION = "1.33.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh-v1alpha1-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda.sh-v1alpha1-triggerauthentication.json",
}
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
VALUES = sorted(HELM_DIR.glob("*-values.yaml"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_URL$", re.IGNORECASE)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in all_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {K8S_DIR}")


def test_the_manifests_cover_every_part() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in all_documents()}
    for wanted in [
        ("Deployment", "onboarding-listener"),
        ("PodDisruptionBudget", "onboarding-listener"),
        ("ScaledObject", "onboarding-listener"),
        ("Deployment", "onboarding-rq-worker"),
        ("Deployment", "onboarding-rq-cron"),
        ("CronJob", "onboarding-metadata-archive"),
        ("StatefulSet", "onboarding-redis"),
        ("StatefulSet", "onboarding-redis-replica"),
        ("ConfigMap", "onboarding-prometheus"),
        ("Deployment", "onboarding-sla"),
        ("Service", "onboarding-sla"),
    ]:
        assert wanted in kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            jsonschema.validate(doc, json.loads(crd.read_text()))
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    listener = find("Deployment", "onboarding-listener")
    broken = json.loads(json.dumps(listener))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    scaled = json.loads(json.dumps(find("ScaledObject", "onboarding-listener")))
    scaled["spec"]["minReplicaCount"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, json.loads(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text()))


def test_no_secret_is_written_in_clear() -> None:
    for doc in all_documents():
        if doc["kind"] == "Secret":  # only empty placeholders that a Job fills (access-rbac.yaml)
            assert not doc.get("data") and not doc.get("stringData"), doc["metadata"]["name"]
        for env in _envs(doc):
            if SECRET_NAME.search(env["name"]) and "value" in env:
                assert not re.search(r"://[^/]*:[^/@]+@", env["value"]), env  # no password in a URL
                assert env["name"].endswith(("_FILE", "_URL")) or "valueFrom" in env, env
    for path in VALUES:
        for item in yaml.safe_load(path.read_text()).get("env", []):
            assert not SECRET_NAME.search(item["name"]), f"{path.name}: {item['name']} belongs in `secret:`"


def test_listener_probes_use_its_health_check_and_keda_watches_its_group() -> None:
    deployment = find("Deployment", "onboarding-listener")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert int(env["LISTENER_METRICS_PORT"]) == port["containerPort"]
    assert env["LISTENER_METRICS_HOST"] == "0.0.0.0"  # reachable by the kubelet's probes
    # Liveness never asks Redis (tests/unit/test_redis_outage.py: /livez stays 200 through an
    # outage); readiness does.
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    scaled = find("ScaledObject", "onboarding-listener")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    defaults = ListenerSettings()
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == defaults.streams.signups_stream
    assert trigger["metadata"]["consumerGroup"] == defaults.group
    assert trigger["metadata"]["addressFromEnv"] in env
    # The backlog (entries no listener has read), not the pending entries, which the running
    # listeners cap by what they hold.
    assert "lagCount" in trigger["metadata"] and "pendingEntriesCount" not in trigger["metadata"]
    auth = find("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {(ref["parameter"], ref["name"]) for ref in auth["spec"]["secretTargetRef"]} == {
        ("username", "onboarding-redis-scaler"),
        ("password", "onboarding-redis-scaler"),
    }
    pdb = find("PodDisruptionBudget", "onboarding-listener")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < scaled["spec"]["minReplicaCount"] + 1


def test_no_liveness_probe_fails_because_redis_is_down() -> None:
    """A Redis outage must not restart every pod: the listener's and SLA service's /livez
    ignore Redis (tests/unit/test_redis_outage.py), the rq worker's check takes --liveness
    (tests/archiver/test_operations.py)."""
    sla = find("Deployment", "onboarding-sla")["spec"]["template"]["spec"]["containers"][0]
    assert sla["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert sla["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = find("Deployment", "onboarding-rq-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["exec"]["command"] == ["onboarding-archive", "worker-check", "--liveness"]


def test_redis_persists_with_aof_and_has_a_replica() -> None:
    conf = find("ConfigMap", "onboarding-redis")["data"]["redis.conf"]
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.MULTILINE)
    replica = find("StatefulSet", "onboarding-redis-replica")
    command = " ".join(replica["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--replicaof onboarding-redis-0.onboarding-redis-headless 6379" in command


def test_prometheus_scrapes_the_annotated_pods() -> None:
    config = yaml.safe_load(find("ConfigMap", "onboarding-prometheus")["data"]["prometheus.yml"])
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"onboarding-pods", "airflow-statsd"} <= jobs
    scraped = [
        doc["metadata"]["name"]
        for doc in all_documents()
        if doc["kind"] == "Deployment"
        and doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    ]
    assert {"onboarding-listener", "onboarding-rq-worker"} <= set(scraped)


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec", {})
    return spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get(
        "spec", {}
    )


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod(doc)
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _envs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [env for c in _containers(doc) for env in c.get("env", [])]


WORKLOADS = [doc for doc in all_documents() if doc["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job")]


@pytest.mark.parametrize("doc", WORKLOADS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_pod_runs_hardened(doc: dict[str, Any]) -> None:
    """docs/security.md, production: non-root, no privilege escalation, no capabilities, a
    read-only root filesystem, the runtime's seccomp profile, no service account token."""
    pod = _pod(doc)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in _containers(doc):
        hardened = container["securityContext"]
        assert hardened["allowPrivilegeEscalation"] is False, container["name"]
        assert hardened["readOnlyRootFilesystem"] is True, container["name"]
        assert hardened["capabilities"] == {"drop": ["ALL"]}, container["name"]
    # A secret file mounted for a non-root user must be readable by it: group-readable
    # through fsGroup, never world-readable.
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            assert "fsGroup" in context and volume["secret"]["defaultMode"] & 0o007 == 0, volume["name"]


@pytest.mark.parametrize("doc", WORKLOADS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_image_is_pinned(doc: dict[str, Any]) -> None:
    """No `latest`, no untagged image: a rollout or a rescheduled pod runs what was tested.
    The project's images carry the package's version (docs/images.md)."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for container in _containers(doc):
        repository, _, tag = container["image"].rpartition(":")
        assert repository and re.fullmatch(r"\d+\.\d+\.\d+", tag), container["image"]
        if repository.startswith("registry.example.com/onboarding"):
            assert tag == version, container["image"]


# Which ACL user (ops/redis_acl.py) each component's REDIS_URL must name.
REDIS_ROLE = {
    "onboarding-listener": "listener",
    "onboarding-sla": "sla",
    "onboarding-rq-worker": "worker",
    "onboarding-rq-cron": "worker",
    "onboarding-metadata-archive": "worker",
}


def test_each_component_connects_to_redis_as_its_own_acl_user() -> None:
    from ops.redis_acl import roles

    names = {role.name for role in roles()}
    seen = {}
    for doc in WORKLOADS:
        for env in _envs(doc):
            if env["name"] == "REDIS_URL":
                ref = env["valueFrom"]["secretKeyRef"]
                seen[doc["metadata"]["name"]] = ref["name"]
                assert ref["key"] == "url"
    assert seen == {name: f"onboarding-redis-{role}" for name, role in REDIS_ROLE.items()}
    assert set(REDIS_ROLE.values()) <= names
    # Nothing refers to a shared Secret of the default user any more.
    text = "\n".join(path.read_text() for path in MANIFESTS)
    assert not re.search(r"name: onboarding-redis, key:", text)


def test_redis_loads_every_role_from_the_rendered_acl_file_with_the_default_user_off() -> None:
    """The shape tests/deploy/test_redis_server.py runs for real."""
    from ops.redis_acl import SERVER_ROLES, roles

    conf = find("ConfigMap", "onboarding-redis")["data"]["redis.conf"]
    aclfile = re.search(r"^aclfile (\S+)$", conf, re.MULTILINE)
    assert aclfile and re.search(r"^masteruser replica$", conf, re.MULTILINE)
    for name in ("onboarding-redis", "onboarding-redis-replica"):
        pod = _pod(find("StatefulSet", name))
        (init,) = pod["initContainers"]
        assert init["args"] == ["onboarding-redis-acl", "render", "--server", "--output", aclfile.group(1)]
        wanted = {f"REDIS_ACL_PASSWORD_{role.name.upper()}_FILE" for role in [*roles(), *SERVER_ROLES]}
        assert {env["name"] for env in init["env"]} == wanted
        (redis_container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in redis_container["volumeMounts"]}
        assert mounts[str(Path(aclfile.group(1)).parent)] == "acl"
        acl_volume = next(v for v in pod["volumes"] if v["name"] == "acl")
        assert acl_volume["emptyDir"]["medium"] == "Memory"  # password hashes never on a disk
        command = " ".join(redis_container["command"])
        assert "--requirepass" not in command and '--masterauth "$REPLICA_PASSWORD"' in command
        assert "--user probe" in redis_container["readinessProbe"]["exec"]["command"][-1]


def test_the_access_job_may_touch_exactly_the_listener_secret_that_the_pods_mount() -> None:
    """The Helm user Job (deploy/helm/realtime-values.yaml) runs as onboarding-access; its Role
    is what tests/unit/test_access_secret.py's fake API enforces."""
    secret = find("Secret", "onboarding-airflow-listener")
    assert not secret.get("data")
    role = find("Role", "onboarding-access")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["onboarding-airflow-listener"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find("RoleBinding", "onboarding-access")
    assert binding["roleRef"]["name"] == "onboarding-access"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "onboarding-access"}]
    find("ServiceAccount", "onboarding-access")
    for name in ("onboarding-listener", "onboarding-sla"):
        pod = _pod(find("Deployment", name))
        volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert volumes == ["onboarding-airflow-listener"], name
