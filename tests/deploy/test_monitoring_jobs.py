"""One source of truth for the monitoring: the scrape job names (deploy/prometheus/scrape-jobs.yml)
agree with every `job=` of the alert rules and the dashboard in each Prometheus configuration
(the local one, the plain Kubernetes one, the Prometheus Operator's monitors); the Kubernetes
Prometheus loads the same rule files, byte for byte; the Operator objects carry the same
rules and dashboard and validate against the Operator's CRD schemas (v0.93.0, vendored:
tests/deploy/schemas/README.md); and the generated files are what scripts/render_monitoring.py
writes now."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "onboarding-sla.json"
PLAIN = ROOT / "deploy" / "k8s" / "prometheus.yaml"
OPERATOR = ROOT / "deploy" / "k8s" / "monitoring-operator.yaml"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    kind: SCHEMAS / f"monitoring.coreos.com-v1-{kind.lower()}.json"
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule")
}
JOB_MATCHER = re.compile(r'\bjob\s*(=~|=)\s*"([^"]*)"')


def source_jobs() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS / "scrape-jobs.yml").read_text())["jobs"]
    return loaded


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def configmap(path: Path, name: str) -> dict[str, str]:
    (found,) = [d for d in documents(path) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    data: dict[str, str] = found["data"]
    return data


def local_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return loaded


def k8s_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(configmap(PLAIN, "onboarding-prometheus")["prometheus.yml"])
    return loaded


def operator_jobs() -> dict[str, dict[str, Any]]:
    """Job name -> endpoint, from the relabeling that names each monitor's job."""
    jobs = {}
    for doc in documents(OPERATOR):
        if doc["kind"] not in ("PodMonitor", "ServiceMonitor"):
            continue
        endpoints = doc["spec"].get("podMetricsEndpoints") or doc["spec"]["endpoints"]
        for endpoint in endpoints:
            (name,) = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
            jobs[name] = endpoint
    return jobs


def configured_jobs() -> dict[str, dict[str, bool]]:
    """Per configuration, each job name and whether it honours the target's labels."""
    return {
        "deploy/prometheus/prometheus.yml": {
            c["job_name"]: bool(c.get("honor_labels")) for c in local_config()["scrape_configs"]
        },
        "deploy/k8s/prometheus.yaml": {
            c["job_name"]: bool(c.get("honor_labels")) for c in k8s_config()["scrape_configs"]
        },
        "deploy/k8s/monitoring-operator.yaml": {
            name: bool(endpoint.get("honorLabels")) for name, endpoint in operator_jobs().items()
        },
    }


def selected_jobs() -> dict[str, list[tuple[str, str]]]:
    """Where each `job=`/`job=~` matcher is: rules and dashboard panels, with operator and value."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                where = f"{path.name}: {rule.get('alert') or rule.get('record')}"
                found[where] = JOB_MATCHER.findall(rule["expr"])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found.setdefault(f"panel {panel['title']!r}", []).extend(JOB_MATCHER.findall(target["expr"]))
    return {where: matchers for where, matchers in found.items() if matchers}


def test_every_job_the_rules_and_panels_select_is_scraped_in_every_configuration() -> None:
    selected = selected_jobs()
    # The ones the issue named, and the review panels: the check sees them.
    flat = {value for matchers in selected.values() for _op, value in matchers}
    assert {"onboarding-listener", "onboarding-intake", "onboarding-sla"} <= flat
    missing = []
    for config, jobs in configured_jobs().items():
        for where, matchers in selected.items():
            for op, value in matchers:
                found = value in jobs if op == "=" else any(re.fullmatch(value, job) for job in jobs)
                if not found:
                    missing.append(f"{config}: {where} selects job{op}{value!r}")
    assert not missing, "\n".join(missing)


def test_the_check_catches_the_issues_mismatch() -> None:
    """deploy/k8s/prometheus.yaml as shipped before: jobs onboarding-pods and airflow-statsd."""
    shipped = {"onboarding-pods", "airflow-statsd"}
    selected = [value for matchers in selected_jobs().values() for _op, value in matchers]
    assert [value for value in selected if value not in shipped] == selected


def test_every_configuration_has_the_source_jobs_and_honours_labels_where_it_says() -> None:
    source = {job["job"]: bool(job.get("honor_labels")) for job in source_jobs()}
    local = {job["job"]: honor for job, honor in ((j, source[j["job"]]) for j in source_jobs()) if "local" in job}
    configs = configured_jobs()
    assert configs["deploy/prometheus/prometheus.yml"] == local
    assert configs["deploy/k8s/prometheus.yaml"] == source
    assert configs["deploy/k8s/monitoring-operator.yaml"] == source
    # The SLA service exports the archive metrics with instance=<Airflow instance>.
    assert source["onboarding-sla"] is True
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in local_config()["scrape_configs"]}
    assert targets == {job["job"]: [job["local"]] for job in source_jobs() if "local" in job}


def test_the_pod_jobs_scrape_ports_the_manifests_name() -> None:
    """Each pod job keeps a component and a container port name that a shipped Deployment has."""
    ports = set()
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in documents(path):
            if doc["kind"] != "Deployment":
                continue
            template = doc["spec"]["template"]
            component = template["metadata"]["labels"].get("app.kubernetes.io/component")
            for container in template["spec"]["containers"]:
                ports.update((component, port.get("name")) for port in container.get("ports", []))
    for job in source_jobs():
        if "pods" in job:
            assert (job["pods"]["component"], job["pods"]["port"]) in ports, job["job"]


def test_the_generated_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/render_monitoring.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_kubernetes_prometheus_loads_the_rule_files_byte_for_byte(tmp_path: Path) -> None:
    rules = configmap(PLAIN, "onboarding-prometheus-rules")
    assert rules == {path.name: path.read_text() for path in RULE_FILES}
    config = configmap(PLAIN, "onboarding-prometheus")["prometheus.yml"]
    assert sorted(k8s_config()["rule_files"]) == sorted(f"rules/{path.name}" for path in RULE_FILES)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed: scripts/setup.sh installs it")
    # Debian's Prometheus is built without Kubernetes discovery, so its promtool refuses
    # kubernetes_sd_configs: checked with one static target instead, the rest as written
    # (relabelling, honor_labels, the rule files).
    parsed = yaml.safe_load(config)
    for scrape in parsed["scrape_configs"]:
        assert scrape.pop("kubernetes_sd_configs")[0]["namespaces"] == {"names": ["onboarding"]}
        scrape["static_configs"] = [{"targets": ["10.0.0.1:9108"]}]
    # As mounted: the config, and the rules ConfigMap in rules/ beside it.
    (tmp_path / "rules").mkdir()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(parsed))
    for name, text in rules.items():
        (tmp_path / "rules" / name).write_text(text)
    check = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in check.stdout + check.stderr


def test_the_operator_objects_carry_the_same_rules_and_dashboard() -> None:
    docs = documents(OPERATOR)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    (dashboards,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields refused, as the API server's strict field validation
    (kubectl's default) does: every object with properties and no other rule for extra keys."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    return schema


def operator_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(CRD_SCHEMAS[kind].read_text())
    # metadata is the API server's ObjectMeta (validated by kubernetes-validate elsewhere).
    schema["properties"]["metadata"] = {"type": "object"}
    return strict(schema)


def test_the_operator_objects_validate_against_the_crd_schemas() -> None:
    docs = [d for d in documents(OPERATOR) if d["apiVersion"] == "monitoring.coreos.com/v1"]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("PrometheusRule") == 1 and "PodMonitor" in kinds and "ServiceMonitor" in kinds
    for doc in docs:
        jsonschema.validate(doc, operator_schema(doc["kind"]))


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("PodMonitor", ("spec", "podMetricsEndpoints", 0, "honourLabels"), True),
        ("PodMonitor", ("spec", "podMetricsEndpoints", 0, "relabelings", 0, "action"), "rename"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "expression"), "up"),
    ],
    ids=["misspelt-field", "bad-enum", "unknown-rule-field"],
)
def test_the_crd_validation_rejects_a_broken_object(kind: str, path: tuple[str | int, ...], bad: object) -> None:
    doc = copy.deepcopy(next(d for d in documents(OPERATOR) if d["kind"] == kind))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, operator_schema(kind))
