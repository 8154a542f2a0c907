"""deploy/k8s/networkpolicies.yaml allows exactly the flows of docs/architecture.md (issue 28,
item 6). Offline: the policies are evaluated as Kubernetes does (a pod selected by a policy
of a type is isolated for that direction; a connection needs the source's egress and the
destination's ingress; peers by podSelector, namespaceSelector, both, or ipBlock; ports by
number, name and protocol) for every (source, destination, port) among the pods of
deploy/k8s/, the Airflow chart's pods (its labels tier/component/release), the cluster
services around them and the external databases; the allowed set must equal FLOWS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "onboarding"
RELEASES = ("realtime", "batch")
DB = {"realtime": "192.0.2.10", "batch": "192.0.2.20"}
KUBE_API = "192.0.2.1"


@dataclass(frozen=True)
class Port:
    number: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (ip)."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    ip: str | None = None


Flow = tuple[str, str, int, str]


# -- the pods -------------------------------------------------------------------------------


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_pods() -> list[Endpoint]:
    """One endpoint per workload of deploy/k8s/, named by its component (the replica apart)."""
    pods = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                template = doc["spec"]["template"]
            elif doc["kind"] == "CronJob":
                template = doc["spec"]["jobTemplate"]["spec"]["template"]
            elif doc["kind"] == "Job":  # the release's function loading (redis-functions-job.yaml)
                template = doc["spec"]["template"]
            else:
                continue
            labels = dict(template["metadata"]["labels"])
            name = labels["app.kubernetes.io/component"]
            if labels.get("redis-role") == "replica":
                name = "redis-replica"
            ports = [
                Port(p["containerPort"], p.get("protocol", "TCP"), p.get("name"))
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            ]
            pods.append(Endpoint(name, NAMESPACE, labels, ports))
    return pods


def airflow_pods() -> list[Endpoint]:
    """The official Airflow chart's pods of both releases (labels tier/component/release)."""
    ports = {
        "api-server": [Port(8080, name="api-server")],
        "worker": [Port(8793, name="worker-logs")],
        "triggerer": [Port(8794, name="triggerer-logs")],
        "statsd": [Port(9125, "UDP", "statsd-ingest"), Port(9102, name="statsd-scrape")],
    }
    pods = []
    for release in RELEASES:
        components = ["api-server", "scheduler", "dag-processor", "triggerer", "worker", "statsd"]
        components += ["run-airflow-migrations"] + (["create-user-job"] if release == "realtime" else [])
        for component in components:
            labels = {"tier": "airflow", "component": component, "release": release}
            pods.append(Endpoint(f"{release}-{component}", NAMESPACE, labels, ports.get(component, [])))
    return pods


def cluster_pods() -> list[Endpoint]:
    """What runs around the service, in other namespaces, and one pod that has no business here."""
    return [
        Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        Endpoint("ingress", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        Endpoint("keda", "keda", {"app.kubernetes.io/name": "keda-operator"}),
        Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, [Port(53, "UDP"), Port(53, "TCP")]),
        # Right labels, wrong namespace: a pod in another namespace dressed as Prometheus.
        Endpoint("impostor", "default", {"app.kubernetes.io/name": "prometheus"}),
    ]


def addresses() -> list[Endpoint]:
    return [
        Endpoint("realtime-db", ip=DB["realtime"], ports=[Port(5432)]),
        Endpoint("batch-db", ip=DB["batch"], ports=[Port(5432)]),
        Endpoint("kube-api", ip=KUBE_API, ports=[Port(443)]),
        Endpoint("internet", ip="203.0.113.5", ports=[Port(443), Port(80)]),
    ]


def endpoints() -> list[Endpoint]:
    return manifest_pods() + airflow_pods() + cluster_pods() + addresses()


# -- the evaluator ----------------------------------------------------------------------------


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions, ANDed; {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.namespace is None:
        return False  # a pod selector never matches an address outside the cluster
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace}):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, destination: Endpoint, port: Port) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != port.protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):  # a named port of the destination pod
            if port.name == wanted and port in destination.ports:
                return True
        elif wanted <= port.number <= item.get("endPort", wanted):
            return True
    return False


class Policies:
    def __init__(self, docs: list[dict[str, Any]], namespace: str = NAMESPACE) -> None:
        assert all(d["kind"] == "NetworkPolicy" for d in docs)
        self.namespace = namespace
        self.docs = docs

    def _selecting(self, pod: Endpoint, kind: str) -> list[dict[str, Any]]:
        if pod.namespace != self.namespace:
            return []
        return [
            d["spec"]
            for d in self.docs
            if kind in d["spec"].get("policyTypes", ["Ingress"]) and selects(d["spec"]["podSelector"], pod.labels)
        ]

    def allows(self, source: Endpoint, destination: Endpoint, port: Port) -> bool:
        egress = self._selecting(source, "Egress")
        if egress and not any(
            port_matches(rule.get("ports"), destination, port)
            and (not rule.get("to") or any(peer_matches(p, self.namespace, destination) for p in rule["to"]))
            for spec in egress
            for rule in spec.get("egress") or []
        ):
            return False
        ingress = self._selecting(destination, "Ingress")
        return not ingress or any(
            port_matches(rule.get("ports"), destination, port)
            and (not rule.get("from") or any(peer_matches(p, self.namespace, source) for p in rule["from"]))
            for spec in ingress
            for rule in spec.get("ingress") or []
        )

    def allowed_flows(self, everything: list[Endpoint]) -> set[Flow]:
        flows = set()
        for source in everything:
            if source.namespace is None:
                continue  # addresses outside the cluster do not open connections here
            for destination in everything:
                if destination is source:
                    continue
                if NAMESPACE not in (source.namespace, destination.namespace):
                    continue  # neither end is ours: not these policies' business
                for port in destination.ports:
                    if self.allows(source, destination, port):
                        flows.add((source.name, destination.name, port.number, port.protocol))
        return flows


def policies() -> Policies:
    return Policies(_docs(K8S / "networkpolicies.yaml"))


# -- the flows of docs/architecture.md ----------------------------------------------------------


def expected_flows() -> set[Flow]:
    ours = [p.name for p in manifest_pods()] + [p.name for p in airflow_pods()]
    flows: set[Flow] = set()
    for pod in ours:  # every pod resolves names
        flows |= {(pod, "kube-dns", 53, "UDP"), (pod, "kube-dns", 53, "TCP")}
    redis_clients = ["listener", "intake", "sla", "review", "rq-worker", "rq-cron", "archive", "keda"]
    redis_clients += ["redis-functions"]
    redis_clients += [f"{r}-{c}" for r in RELEASES for c in ("scheduler", "worker")]  # broker, tasks
    for redis_pod in ("redis", "redis-replica"):  # a promoted replica takes the same clients
        flows |= {(client, redis_pod, 6379, "TCP") for client in redis_clients}
    flows |= {("redis-replica", "redis", 6379, "TCP"), ("redis", "redis-replica", 6379, "TCP")}
    flows |= {
        ("listener", "realtime-api-server", 8080, "TCP"),  # triggers and reads runs
        ("sla", "realtime-api-server", 8080, "TCP"),  # overdue runs, heartbeat
        ("sla", "batch-api-server", 8080, "TCP"),  # heartbeat
        ("ingress", "sla", 9114, "TCP"),
        ("ingress", "review", 9116, "TCP"),
        ("prometheus", "listener", 9108, "TCP"),
        ("prometheus", "intake", 9118, "TCP"),
        ("prometheus", "sla", 9114, "TCP"),
        ("prometheus", "review", 9116, "TCP"),
        ("prometheus", "rq-worker", 9110, "TCP"),
        ("realtime-create-user-job", "kube-api", 443, "TCP"),  # onboarding-access patches its Secrets
    }
    for job in ("rq-worker", "archive"):  # the weekly archive reads both metadata databases
        flows |= {(job, "realtime-db", 5432, "TCP"), (job, "batch-db", 5432, "TCP")}
    for release in RELEASES:
        components = [p.name for p in airflow_pods() if p.labels["release"] == release]
        flows |= {(c, f"{release}-db", 5432, "TCP") for c in components if not c.endswith("statsd")}
        flows |= {
            (f"{release}-{c}", f"{release}-api-server", 8080, "TCP")
            for c in ("scheduler", "worker", "triggerer", "dag-processor")
        }
        flows |= {
            ("ingress", f"{release}-api-server", 8080, "TCP"),  # operators' UI and API
            (f"{release}-api-server", f"{release}-worker", 8793, "TCP"),  # task logs
            (f"{release}-api-server", f"{release}-triggerer", 8794, "TCP"),
            ("prometheus", f"{release}-statsd", 9102, "TCP"),
        }
        flows |= {(c, f"{release}-statsd", 9125, "UDP") for c in components if not c.endswith("statsd")}
    return flows


# -- the tests --------------------------------------------------------------------------------------


def test_the_network_policies_validate_against_the_kubernetes_schemas() -> None:
    docs = _docs(K8S / "networkpolicies.yaml")
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_everything_is_denied_by_default_in_and_out() -> None:
    specs = [d["spec"] for d in _docs(K8S / "networkpolicies.yaml")]
    assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in specs


def test_the_allowed_flows_are_exactly_the_architecture() -> None:
    allowed = policies().allowed_flows(endpoints())
    expected = expected_flows()
    assert not allowed - expected, f"allowed but not in the architecture: {sorted(allowed - expected)}"
    assert not expected - allowed, f"in the architecture but denied: {sorted(expected - allowed)}"


def test_the_named_risks_are_denied() -> None:
    allowed = policies().allowed_flows(endpoints())
    reaches = {(src, dst) for src, dst, _port, _proto in allowed}
    for app_facing in ("listener", "sla", "review", "rq-cron"):
        for db in ("realtime-db", "batch-db"):
            assert (app_facing, db) not in reaches, f"{app_facing} reaches {db}"
    assert ("realtime-scheduler", "batch-db") not in reaches and ("batch-worker", "realtime-db") not in reaches
    assert ("listener", "batch-api-server") not in reaches  # it triggers realtime runs only
    assert not {(s, d) for s, d in reaches if d == "internet"}  # no egress to the world
    metrics = {("listener", 9108), ("rq-worker", 9110), ("realtime-statsd", 9102), ("batch-statsd", 9102)}
    for src, dst, port, _proto in allowed:
        if (dst, port) in metrics:
            assert src == "prometheus", (src, dst, port)
    assert not {flow for flow in allowed if flow[0] == "impostor"}  # Prometheus' labels, wrong namespace
    assert {dst for src, dst, _p, _q in allowed if src == "ingress"} == {
        "sla",
        "review",
        "realtime-api-server",
        "batch-api-server",
    }


def test_every_workload_of_the_manifests_is_covered() -> None:
    """A new Deployment must come with its flows: each of ours is selected by a policy other
    than the default deny and the DNS one, for both directions."""
    named = [
        d["spec"] for d in _docs(K8S / "networkpolicies.yaml") if d["metadata"]["name"] not in ("default-deny", "dns")
    ]
    for pod in manifest_pods() + airflow_pods():
        types = {t for spec in named if selects(spec["podSelector"], pod.labels) for t in spec["policyTypes"]}
        assert types == {"Ingress", "Egress"}, pod.name


# -- the evaluator itself -------------------------------------------------------------------------


def _pod(name: str, namespace: str = NAMESPACE, ports: list[Port] | None = None, **labels: str) -> Endpoint:
    return Endpoint(name, namespace, labels, ports or [Port(80, name="http")])


def test_the_evaluator_follows_kubernetes_semantics() -> None:
    a, b = _pod("a", app="a"), _pod("b", app="b")
    other_ns = _pod("c", "elsewhere", app="a")
    assert Policies([]).allows(a, b, b.ports[0])  # no policy: open
    deny = {"kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert not Policies([deny]).allows(a, b, b.ports[0])

    def ingress(peers: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        rule: dict[str, Any] = {"from": peers}
        if ports is not None:
            rule["ports"] = ports
        spec = {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"], "ingress": [rule]}
        return {"kind": "NetworkPolicy", "spec": spec}

    same_ns_a = ingress([{"podSelector": {"matchLabels": {"app": "a"}}}])
    assert Policies([same_ns_a]).allows(a, b, b.ports[0])
    assert not Policies([same_ns_a]).allows(other_ns, b, b.ports[0])  # podSelector alone: own namespace
    both = ingress(
        [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}},
                "podSelector": {"matchLabels": {"app": "a"}},
            }
        ]
    )
    assert Policies([both]).allows(other_ns, b, b.ports[0]) and not Policies([both]).allows(a, b, b.ports[0])
    either = ingress(
        [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}},
            {"podSelector": {"matchLabels": {"app": "nobody"}}},
        ]
    )
    assert Policies([either]).allows(_pod("d", "elsewhere"), b, b.ports[0])
    named = ingress([{"podSelector": {}}], [{"port": "http"}])
    assert Policies([named]).allows(a, b, b.ports[0])
    assert not Policies([named]).allows(a, b, Port(81, name="other"))
    udp = ingress([{"podSelector": {}}], [{"port": 80, "protocol": "UDP"}])
    assert not Policies([udp]).allows(a, b, b.ports[0])
    ranged = ingress([{"podSelector": {}}], [{"port": 70, "endPort": 90}])
    assert Policies([ranged]).allows(a, b, b.ports[0])
    assert selects({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"app": "a"})
    assert not selects({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {"app": "a"})
    assert selects({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": "a"})
    outside = Endpoint("db", ip="192.0.2.10", ports=[Port(5432)])
    assert peer_matches({"ipBlock": {"cidr": "192.0.2.0/24"}}, NAMESPACE, outside)
    assert not peer_matches({"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.10/32"]}}, NAMESPACE, outside)
    assert not peer_matches({"podSelector": {}}, NAMESPACE, outside)


def test_a_new_workload_without_its_own_policy_gets_nothing_but_dns() -> None:
    newcomer = _pod("newcomer", ports=[Port(8000, name="http")], **{"app.kubernetes.io/name": "onboarding"})
    allowed = policies().allowed_flows([*endpoints(), newcomer])
    assert {flow for flow in allowed if "newcomer" in flow[:2]} == {
        ("newcomer", "kube-dns", 53, "UDP"),
        ("newcomer", "kube-dns", 53, "TCP"),
    }


@pytest.mark.parametrize("breakage", ["drop-dns", "open-redis", "sla-to-db"])
def test_a_changed_policy_fails_the_flow_table(breakage: str) -> None:
    docs = _docs(K8S / "networkpolicies.yaml")
    if breakage == "drop-dns":
        docs = [d for d in docs if d["metadata"]["name"] != "dns"]
    elif breakage == "open-redis":
        redis = next(d for d in docs if d["metadata"]["name"] == "redis")
        redis["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]
    else:
        sla = next(d for d in docs if d["metadata"]["name"] == "sla")
        sla["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]})
    assert Policies(docs).allowed_flows(endpoints()) != expected_flows()
