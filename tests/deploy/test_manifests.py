"""Every production manifest validates: Kubernetes objects against the Kubernetes JSON
schemas (kubernetes-validate, offline, strict: unknown fields fail), KEDA objects against
the CRD schemas vendored in tests/deploy/schemas/, Helm values against the Airflow chart's
values schema (a closed subset, see its $comment). And the manifests agree with the code:
probes hit the listener's health check, KEDA watches the listener's stream and group, no
secret is written in clear."""

from __future__ import annotations

import configparser
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
        assert doc["kind"] != "Secret", f"{doc['metadata']['name']}: Secrets are created outside the repo"
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


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_helm_values_validate_against_the_chart_schema(path: Path) -> None:
    schema = json.loads((SCHEMAS / "airflow-chart-values.subset.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_the_values_schema_rejects_a_misspelt_key() -> None:
    schema = json.loads((SCHEMAS / "airflow-chart-values.subset.schema.json").read_text())
    values = yaml.safe_load((HELM_DIR / "realtime-values.yaml").read_text())
    values["workers"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)


def test_realtime_helm_config_carries_the_local_latency_settings() -> None:
    """The chart's [config] and deploy/realtime/airflow.cfg say the same where both set a key."""
    values = yaml.safe_load((HELM_DIR / "realtime-values.yaml").read_text())
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "deploy" / "realtime" / "airflow.cfg")
    differ_on_purpose = {("core", "parallelism")}  # the cluster's slots, not the laptop's
    checked = 0
    for section, settings in values["config"].items():
        for key, value in settings.items():
            if cfg.has_option(section, key) and (section, key) not in differ_on_purpose:
                assert str(value) == cfg.get(section, key), f"[{section}] {key}"
                checked += 1
    assert checked >= 8


def _envs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get(
        "spec", {}
    )
    return [env for c in pod.get("containers", []) for env in c.get("env", [])]
