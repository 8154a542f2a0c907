"""The official Airflow chart (1.18.0, vendored: deploy/helm/vendor/README.md) rendered by Helm
with deploy/helm/*-values.yaml, offline: every rendered object validates against the Kubernetes
1.33 schemas (kubernetes-validate, strict) or, for KEDA's ScaledObject, its vendored CRD
schema; and what the values promise is what the chart writes: the executor and settings of
airflow.cfg, the image and its local settings, resources, replicas and disruption budgets,
the env and Secrets of each pod, the StatsD mappings, the labels and ports the network
policies are evaluated with."""

from __future__ import annotations

import configparser
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import chart
from tests.deploy.test_network_policies import airflow_pods

SCHEMAS = Path(__file__).parent / "schemas"
SCALED_OBJECT_SCHEMA = SCHEMAS / "keda.sh-v1alpha1-scaledobject.json"
RELEASES = ("realtime", "batch")
# What each release renders, by kind: a values change that adds or drops an object shows here.
EXPECTED_KINDS = {
    "realtime": {
        "ServiceAccount": 6,
        "ConfigMap": 2,
        "Role": 2,
        "RoleBinding": 2,
        "Service": 3,
        "Deployment": 5,
        "PodDisruptionBudget": 2,
        "ScaledObject": 1,
        "Job": 2,
    },
    "batch": {
        "ServiceAccount": 6,
        "ConfigMap": 2,
        "Role": 2,
        "RoleBinding": 2,
        "Service": 3,
        "Deployment": 4,
        "StatefulSet": 1,  # the worker keeps its task logs on a volume (workers.persistence, the chart's default)
        "Job": 1,
    },
}
IMAGE = "registry.example.com/onboarding-airflow:0.1.0"


def objects(release: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [doc for doc in chart.render(release) if kind is None or doc["kind"] == kind]


def workloads(release: str) -> list[dict[str, Any]]:
    return [doc for doc in chart.render(release) if doc["kind"] in ("Deployment", "StatefulSet", "Job")]


def named(release: str, kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(release, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def airflow_cfg(release: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(named(release, "ConfigMap", f"{release}-config")["data"]["airflow.cfg"])
    return parser


def values(release: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((chart.HELM_DIR / f"{release}-values.yaml").read_text())
    return loaded


@pytest.mark.parametrize("release", RELEASES)
def test_every_rendered_object_validates_offline(release: str) -> None:
    docs = objects(release)
    assert Counter(doc["kind"] for doc in docs) == EXPECTED_KINDS[release]
    keda = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    for doc in docs:
        assert doc["metadata"].get("namespace", chart.NAMESPACE) == chart.NAMESPACE
        if (doc["apiVersion"], doc["kind"]) == ("keda.sh/v1alpha1", "ScaledObject"):
            jsonschema.validate(doc, keda)
        else:
            kubernetes_validate.validate(doc, chart.KUBERNETES_VERSION, strict=True)


def test_the_validation_rejects_a_broken_rendered_object() -> None:
    worker = json.loads(json.dumps(named("realtime", "Deployment", "realtime-worker")))
    pod_spec(worker)["containers"][0]["resources"]["request"] = {"cpu": "2"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, chart.KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("release", RELEASES)
def test_the_chart_writes_our_airflow_cfg_with_celery_and_the_releases_dags(release: str) -> None:
    cfg = airflow_cfg(release)
    for section, keys in values(release)["config"].items():
        for key, value in keys.items():
            assert cfg.get(section, key) == str(value), f"[{section}] {key}"
    assert cfg.get("core", "executor") == "CeleryExecutor"
    assert cfg.get("core", "dags_folder") == f"/opt/onboarding/dags/{release}"
    assert cfg.get("metrics", "statsd_host") == f"{release}-statsd"  # this release's exporter
    if release == "realtime":
        assert cfg.get("core", "auth_manager") == "airflow_adapter.auth_manager.OnboardingFabAuthManager"
        assert cfg.get("scheduler", "scheduler_idle_sleep_time") == "0.05"


@pytest.mark.parametrize("release", RELEASES)
def test_every_airflow_container_runs_our_image(release: str) -> None:
    airflow = [w for w in workloads(release) if w["metadata"]["name"] != f"{release}-statsd"]
    assert len(airflow) == len(workloads(release)) - 1
    for workload in airflow:
        for container in containers(workload):
            assert container["image"] == IMAGE, (workload["metadata"]["name"], container["name"])


def test_the_realtime_pods_keep_the_images_local_settings() -> None:
    """The image's deploy/realtime/airflow_local_settings.py warms the model before the
    workers fork; the chart would mount its own over it (as it does for batch, which does
    without)."""
    for workload in workloads("realtime"):
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert "airflow_local_settings" not in mount["mountPath"], workload["metadata"]["name"]
    assert "airflow_local_settings.py" not in named("realtime", "ConfigMap", "realtime-config")["data"]
    mounted = [
        mount["mountPath"]
        for container in containers(named("batch", "Deployment", "batch-scheduler"))
        for mount in container.get("volumeMounts", [])
    ]
    assert "/opt/airflow/config/airflow_local_settings.py" in mounted  # the check sees the chart's mount


def test_the_chart_renders_no_secret_every_credential_is_ours_by_name() -> None:
    for release in RELEASES:
        assert objects(release, "Secret") == []
    env = {
        item["name"]: item.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        for item in next(
            c for c in containers(named("realtime", "Deployment", "realtime-scheduler")) if c["name"] == "scheduler"
        )["env"]
    }
    for name, secret in {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "realtime-airflow-metadata",
        "AIRFLOW__CELERY__BROKER_URL": "realtime-airflow-broker",
        "AIRFLOW__CORE__FERNET_KEY": "realtime-airflow-fernet",
        "AIRFLOW__API_AUTH__JWT_SECRET": "realtime-airflow-jwt",
        "MODEL_VERIFY_KEY": "onboarding-model-signing",
    }.items():
        assert env.get(name) == secret, name


def test_realtime_workers_resources_env_and_autoscaling() -> None:
    worker = named("realtime", "Deployment", "realtime-worker")
    main = next(c for c in pod_spec(worker)["containers"] if c["name"] == "worker")
    assert main["resources"] == {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    env = {item["name"]: item for item in main["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "onboarding-redis-publisher", "key": "url"}
    assert env["RISK_MODEL_DIR"]["value"] == "/models"
    assert env["MODEL_SIGNING_REQUIRE_KEY"]["value"] == "true"
    assert "MODEL_SIGNING_KEY" not in env
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    scaled = named("realtime", "ScaledObject", "realtime-worker")
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 8)
    assert scaled["spec"]["scaleTargetRef"]["name"] == "realtime-worker"


def test_only_the_pods_that_run_task_code_get_a_redis_user() -> None:
    for release, expected in {
        "realtime": dict.fromkeys(("realtime-worker", "realtime-dag-processor"), "onboarding-redis-publisher"),
        "batch": {"batch-worker": "onboarding-redis-drift"},
    }.items():
        found = {
            workload["metadata"]["name"]: item["valueFrom"]["secretKeyRef"]["name"]
            for workload in workloads(release)
            for container in containers(workload)
            for item in container.get("env", [])
            if item["name"] == "REDIS_URL"
        }
        assert found == expected, release


def test_realtime_schedulers_and_api_servers_are_two_each_with_a_disruption_budget() -> None:
    for component in ("scheduler", "api-server"):
        deployment = named("realtime", "Deployment", f"realtime-{component}")
        assert deployment["spec"]["replicas"] == 2
        pdb = named("realtime", "PodDisruptionBudget", f"realtime-{component}-pdb")
        assert pdb["spec"]["maxUnavailable"] == 1
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        sysctls = pod_spec(deployment)["securityContext"]["sysctls"]
        assert {"name": "net.ipv4.tcp_rto_max_ms", "value": "5000"} in sysctls


def test_the_access_job_runs_onboarding_access_as_its_service_account() -> None:
    job = named("realtime", "Job", "realtime-create-user")
    spec = pod_spec(job)
    assert spec["serviceAccountName"] == "onboarding-access"
    (container,) = spec["containers"]
    assert container["command"] == ["onboarding-access"]
    assert container["args"] == values("realtime")["createUserJob"]["args"]
    assert container["args"][:2] == ["--listener-secret", "onboarding-airflow-listener"]
    assert all(item["name"] != "REDIS_URL" for item in container.get("env", []))
    assert not [job for job in objects("batch", "Job") if job["metadata"]["name"] == "batch-create-user"]


@pytest.mark.parametrize("release", RELEASES)
def test_the_statsd_exporter_maps_as_deploy_prometheus_expects(release: str) -> None:
    mapping = yaml.safe_load((chart.ROOT / "deploy" / "prometheus" / "statsd-mapping.yml").read_text())
    rendered = yaml.safe_load(named(release, "ConfigMap", f"{release}-statsd")["data"]["mappings.yml"])
    assert rendered["mappings"] == [{**mapping["defaults"], **rule} for rule in mapping["mappings"]]


@pytest.mark.parametrize("release", RELEASES)
def test_the_network_policy_model_has_the_rendered_pods_labels_and_ports(release: str) -> None:
    """tests/deploy/test_network_policies.py evaluates the policies over a model of the chart's
    pods; every rendered pod must be in it with the same labels and named ports."""
    modelled = {pod.name: pod for pod in airflow_pods() if pod.labels["release"] == release}
    for workload in workloads(release):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        pod = modelled.get(f"{release}-{labels['component']}")
        assert pod is not None, f"{workload['metadata']['name']} is not in the network policy model"
        assert pod.labels.items() <= labels.items()
        ports = {
            (port.get("name"), port["containerPort"], port.get("protocol", "TCP"))
            for container in pod_spec(workload)["containers"]
            for port in container.get("ports", [])
        }
        assert ports == {(p.name, p.number, p.protocol) for p in pod.ports}, workload["metadata"]["name"]
