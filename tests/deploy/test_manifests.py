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
from onboarding.settings import StreamSettings, parse_apps

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
HELM_DIR = ROOT / "deploy" / "helm"
SCHEMAS = Path(__file__).parent / "schemas"
KUBERNETES_VERSION = "1.33.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh-v1alpha1-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda.sh-v1alpha1-triggerauthentication.json",
    # Prometheus Operator v0.93.0 (deploy/k8s/monitoring-operator.yaml; strictly: test_monitoring_jobs.py).
    **{
        ("monitoring.coreos.com/v1", kind): SCHEMAS / f"monitoring.coreos.com-v1-{kind.lower()}.json"
        for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule")
    },
}
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
VALUES = sorted(HELM_DIR.glob("*-values.yaml"))
# A *_REQUIRE_KEY switch (MODEL_SIGNING_REQUIRE_KEY) is a flag, not a key.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(?<!_REQUIRE)_KEY$|_URL$", re.IGNORECASE)


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
        ("Deployment", "onboarding-intake"),
        ("Deployment", "onboarding-rq-worker"),
        ("Deployment", "onboarding-rq-cron"),
        ("CronJob", "onboarding-metadata-archive"),
        ("StatefulSet", "onboarding-redis"),
        ("StatefulSet", "onboarding-redis-replica"),
        ("ConfigMap", "onboarding-prometheus"),
        ("Deployment", "onboarding-sla"),
        ("Service", "onboarding-sla"),
        ("Deployment", "onboarding-review"),
        ("Service", "onboarding-review"),
        ("ConfigMap", "onboarding-apps"),
        ("Job", "onboarding-redis-functions"),
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
    for name in ("onboarding-sla", "onboarding-review"):  # the review page's /livez: tests/unit/test_review_web.py
        web = find("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert web["livenessProbe"]["httpGet"]["path"] == "/livez", name
        assert web["readinessProbe"]["httpGet"]["path"] == "/readyz", name
    worker = find("Deployment", "onboarding-rq-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["exec"]["command"] == ["onboarding-archive", "worker-check", "--liveness"]


def test_redis_persists_with_aof_and_has_a_replica() -> None:
    conf = find("ConfigMap", "onboarding-redis")["data"]["redis.conf"]
    assert re.search(r"^appendonly yes$", conf, re.MULTILINE)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.MULTILINE)
    replica = find("StatefulSet", "onboarding-redis-replica")
    command = " ".join(replica["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--replicaof onboarding-redis-0.onboarding-redis-headless 6379" in command


def test_prometheus_scrapes_every_pod_that_serves_metrics() -> None:
    """Each Deployment annotated for scraping has a job of the Kubernetes Prometheus (the job
    names the rules select on: tests/deploy/test_monitoring_jobs.py) that keeps its pods."""
    config = yaml.safe_load(find("ConfigMap", "onboarding-prometheus")["data"]["prometheus.yml"])
    kept = {}
    for job in config["scrape_configs"]:
        for relabel in job["relabel_configs"]:
            if relabel["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]:
                kept[relabel["regex"]] = job["job_name"]
    scraped = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for doc in all_documents()
        if doc["kind"] == "Deployment"
        and doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    }
    assert {
        "onboarding-listener",
        "onboarding-intake",
        "onboarding-rq-worker",
        "onboarding-sla",
        "onboarding-review",
    } <= set(scraped)
    assert {name: kept.get(component) for name, component in scraped.items()} == {
        "onboarding-listener": "onboarding-listener",
        "onboarding-intake": "onboarding-intake",
        "onboarding-rq-worker": "onboarding-rq",
        "onboarding-sla": "onboarding-sla",
        "onboarding-review": "onboarding-review",
    }


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
    "onboarding-intake": "intake",
    "onboarding-sla": "sla",
    "onboarding-review": "reviewer",
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
        names = {env["name"] for env in init["env"]}
        # Besides the fixed roles: ONBOARDING_APPS and one password file per app (see below).
        assert wanted | {"ONBOARDING_APPS"} <= names
        extra = names - wanted - {"ONBOARDING_APPS"}
        assert all(re.fullmatch(r"REDIS_ACL_PASSWORD_APP_[A-Z0-9_]+_FILE", n) for n in extra), extra
        (redis_container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in redis_container["volumeMounts"]}
        assert mounts[str(Path(aclfile.group(1)).parent)] == "acl"
        acl_volume = next(v for v in pod["volumes"] if v["name"] == "acl")
        assert acl_volume["emptyDir"]["medium"] == "Memory"  # password hashes never on a disk
        command = " ".join(redis_container["command"])
        assert "--requirepass" not in command and '--masterauth "$REPLICA_PASSWORD"' in command
        assert "--user probe" in redis_container["readinessProbe"]["exec"]["command"][-1]


def _apps_ref(container: dict[str, Any]) -> dict[str, Any]:
    (env,) = [e for e in container["env"] if e["name"] == "ONBOARDING_APPS"]
    return env["valueFrom"]["configMapKeyRef"]


def test_the_listener_and_the_acl_render_agree_on_onboarding_apps(tmp_path: Path) -> None:
    """The apps whose intakes the intake process forwards (and whose ids the listener prefixes)
    are the apps whose users Redis' ACL file holds: all read ONBOARDING_APPS from the same
    ConfigMap key, each ACL init container has a
    password file (Secret onboarding-redis-acl, key app-<name>) for every app listed, and with
    the documented example `web` the init container's environment renders `user app-web on`."""
    from ops.redis_acl import render

    listener = find("Deployment", "onboarding-listener")["spec"]["template"]["spec"]["containers"][0]
    ref = _apps_ref(listener)
    intake = find("Deployment", "onboarding-intake")["spec"]["template"]["spec"]["containers"][0]
    assert _apps_ref(intake) == ref
    configmap = find("ConfigMap", ref["name"])
    apps = parse_apps(configmap["data"][ref["key"]])
    for name in ("onboarding-redis", "onboarding-redis-replica"):
        (init,) = _pod(find("StatefulSet", name))["initContainers"]
        assert _apps_ref(init) == ref, name
        files = {e["name"]: e["value"] for e in init["env"] if e["name"].endswith("_FILE")}
        for app in {*apps, "web"}:  # the configured apps and the documented example
            env_name = f"REDIS_ACL_PASSWORD_APP_{app.upper().replace('-', '_')}_FILE"
            assert files.get(env_name) == f"/run/secrets/redis-acl/app-{app}", (name, app)
        for env_name, path in files.items():  # every password file is a key of the ACL Secret
            assert path.startswith("/run/secrets/redis-acl/"), env_name
        # What the init container renders, with the Secret's keys as files and apps=web.
        environ = {"ONBOARDING_APPS": "web"}
        for env_name, path in files.items():
            local = tmp_path / Path(path).name
            local.write_text(f"pw-{local.name}")
            environ[env_name] = str(local)
        rendered = render(StreamSettings.from_env(environ), environ, server=True)
        assert re.search(r"^user app-web reset on #[0-9a-f]{64} ", rendered, re.MULTILINE), name
    # Neither holds an app's password.
    for container in (listener, intake):
        assert not any(e["name"].startswith("REDIS_ACL_PASSWORD") for e in container["env"])


def test_the_redis_functions_job_loads_both_libraries_as_admin() -> None:
    """A fresh production Redis gets the `onboarding` and `onboarding_intake` libraries from
    the release's Job (deploy/k8s/redis-functions-job.yaml) before the listener FCALLs them,
    as the Redis `admin` user from the ACL Secret; no other pod holds the admin password."""
    job = find("Job", "onboarding-redis-functions")
    (container,) = _pod(job)["containers"]
    # Kubernetes expands $(REDIS_ADMIN_PASSWORD) in args from the container's env.
    assert container["args"] == [
        "onboarding-redis-acl",
        "load-functions",
        "--url",
        "redis://admin:$(REDIS_ADMIN_PASSWORD)@onboarding-redis.onboarding.svc:6379/0",
    ]
    (env,) = container["env"]
    assert env["name"] == "REDIS_ADMIN_PASSWORD"
    assert env["valueFrom"]["secretKeyRef"] == {"name": "onboarding-redis-acl", "key": "admin"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert _pod(job)["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] > 0
    for doc in WORKLOADS:
        if doc["metadata"]["name"] != job["metadata"]["name"]:
            refs = [e["valueFrom"]["secretKeyRef"] for e in _envs(doc) if "secretKeyRef" in e.get("valueFrom", {})]
            assert {"name": "onboarding-redis-acl", "key": "admin"} not in refs, doc["metadata"]["name"]


def test_the_access_job_may_touch_exactly_the_listener_secret_that_the_pods_mount() -> None:
    """The Helm user Job (deploy/helm/realtime-values.yaml) runs as onboarding-access; its Role
    is what tests/unit/test_access_secret.py's fake API enforces. The listener and the SLA
    service each mount their own Airflow user's Secret (the SLA's user is read-only)."""
    for name in ("onboarding-airflow-listener", "onboarding-airflow-sla"):
        assert not find("Secret", name).get("data")
    role = find("Role", "onboarding-access")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["onboarding-airflow-listener", "onboarding-airflow-sla"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find("RoleBinding", "onboarding-access")
    assert binding["roleRef"]["name"] == "onboarding-access"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "onboarding-access"}]
    find("ServiceAccount", "onboarding-access")
    for name, secret, user in (
        ("onboarding-listener", "onboarding-airflow-listener", "listener"),
        ("onboarding-sla", "onboarding-airflow-sla", "sla"),
    ):
        pod = _pod(find("Deployment", name))
        volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v and "airflow" in v["name"]]
        assert volumes == [secret], name
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["AIRFLOW_USERNAME"] == user, name
