"""The Prometheus rules, the Grafana dashboard, the StatsD mapping and the runbooks agree
with the metrics the services really expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry

from archiver.metrics import StoreCollector
from archiver.store import ArchiveStore
from intake.metrics import IntakeMetrics
from listener.metrics import ListenerMetrics
from risk.drift import DriftCollector
from sla.metrics import SchedulerCollector, SlaMetrics, StreamCollector
from sla.review import ReviewQueueCollector
from sla.settings import SlaSettings
from testkit.services import require
from tests.conftest import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "onboarding-sla.json"
RULE_TESTS = (
    "tests/rules_test.yml",
    "tests/rules_archive_test.yml",
    "tests/rules_review_test.yml",
    "tests/rules_model_test.yml",
    "tests/rules_drift_test.yml",
)
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan", "time",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool (Debian package prometheus)")
    return str(path)


def exposed_metric_names(client: redis.Redis, tmp_path: Path) -> set[str]:
    """Every series name our processes can expose (counters with _total, histograms with suffixes)."""
    settings = SlaSettings()
    registries = [SlaMetrics(settings).registry, ListenerMetrics().registry, IntakeMetrics().registry]
    extra = CollectorRegistry()
    for collector in (
        StreamCollector(client, settings),
        SchedulerCollector(()),
        StoreCollector(ArchiveStore(tmp_path)),
        DriftCollector(client),
        ReviewQueueCollector(client),
    ):
        extra.register(collector)
    names = {"up"}
    for registry in [*registries, extra]:
        for family in registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
            else:
                names.add(family.name)
    return names


def statsd_mapped_names() -> set[str]:
    mapping = yaml.safe_load((PROMETHEUS / "statsd-mapping.yml").read_text())
    names = set()
    for rule in mapping["mappings"]:
        names.add(rule["name"])
        names.update(rule["name"] + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects (labels, functions, keywords and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group(0)
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool, "test", "rules", *RULE_TESTS],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    config = subprocess.run([tool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_issue_s_alerts_exist_with_their_windows() -> None:
    alerts = {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert "ratio_rate1h > 14.4" in alerts["SLOBurnRateFast"]["expr"]
    assert "ratio_rate5m > 14.4" in alerts["SLOBurnRateFast"]["expr"]
    assert "ratio_rate6h > 6 " in alerts["SLOBurnRateSlow"]["expr"]
    assert "ratio_rate30m > 6 " in alerts["SLOBurnRateSlow"]["expr"]
    assert "ratio_rate3d > 1 " in alerts["SLOBurnRateTicket"]["expr"]
    assert "ratio_rate6h > 1 " in alerts["SLOBurnRateTicket"]["expr"]
    for name in (
        "ListenerDown", "SignupLagGrowing", "DeadLettersArriving", "DecisionsOverdue", "ArchiveNotSuccessful",
        "SchedulerHeartbeatMissing", "ReviewQueueBacklog", "ReviewCasesOverdue", "ModelIntegrityFailure",
        "RiskFeatureDrift",
    ):  # fmt: skip
        assert name in alerts
    assert alerts["ReviewCasesOverdue"]["expr"].strip() == "onboarding_review_overdue_cases > 0"
    assert "> 0.8 * onboarding_review_case_deadline_seconds" in alerts["ReviewQueueBacklog"]["expr"]
    # risk/drift.py: above 0.25 the population has shifted; one alert per feature, not per listener.
    assert alerts["RiskFeatureDrift"]["expr"].strip() == "max by (feature) (onboarding_risk_feature_psi) > 0.25"


def test_every_alert_has_a_runbook_section() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    headings = {line[3:].strip() for line in runbooks.splitlines() if line.startswith("## ")}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                assert rule["alert"] in headings, f"no '## {rule['alert']}' in docs/runbooks.md"
                expected = f"{{{{ $externalLabels.runbook_base_url }}}}#{rule['alert'].lower()}"
                assert rule["annotations"]["runbook_url"] == expected


def test_runbook_urls_are_absolute_from_one_base_in_every_prometheus_config() -> None:
    """Alertmanager and Grafana open a runbook_url as it is: it must be absolute. The base is
    set once per Prometheus (global.external_labels.runbook_base_url); promtool's tests
    expand it (rules_test.yml: https://runbooks.example.com/...#sloburnratefast)."""
    import re

    (k8s,) = [
        doc["data"]["prometheus.yml"]
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "prometheus.yaml").read_text())
        if doc["metadata"]["name"] == "onboarding-prometheus"
    ]
    configs = {"deploy/prometheus/prometheus.yml": (PROMETHEUS / "prometheus.yml").read_text(), "deploy/k8s": k8s}
    for where, text in configs.items():
        base = yaml.safe_load(text)["global"]["external_labels"]["runbook_base_url"]
        assert re.fullmatch(r"https://[^#\s]+/runbooks\.md", base), where
    # Grafana's links use the same base (a constant dashboard variable).
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "runbook_base_url"]
    assert variable["type"] == "constant" and variable["query"] == base
    texts = [p["options"]["content"] for p in dashboard["panels"] if p.get("type") == "text"]
    assert all("docs/runbooks.md" not in text for text in texts)
    assert any("${runbook_base_url}#decisionsoverdue" in text for text in texts)
    for test_file in RULE_TESTS:
        spec = yaml.safe_load((PROMETHEUS / test_file).read_text())
        urls = [
            (test["external_labels"]["runbook_base_url"], alert["exp_annotations"]["runbook_url"])
            for test in spec["tests"]
            for case in test.get("alert_rule_test", [])
            for alert in case.get("exp_alerts", [])
        ]
        assert urls and all(url.startswith(f"{base}#") and base.startswith("https://") for base, url in urls)


@pytest.fixture
def known_names(redis_client: redis.Redis, tmp_path: Path) -> set[str]:
    return exposed_metric_names(redis_client, tmp_path) | recorded_names() | statsd_mapped_names()


def test_rules_and_dashboard_only_use_series_that_exist(known_names: set[str]) -> None:
    used: dict[str, set[str]] = {}
    for title, expr in dashboard_exprs():
        used[f"dashboard panel {title!r}"] = metric_names_in(expr)
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used[f"rule {rule.get('record') or rule.get('alert')}"] = metric_names_in(rule["expr"])
    unknown = {where: sorted(names - known_names) for where, names in used.items() if names - known_names}
    assert not unknown, unknown
    assert len(dashboard_exprs()) >= 20


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    tool = promtool()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")}
                    for i, (_title, expr) in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_name_extraction_sees_what_a_query_selects() -> None:
    names = metric_names_in(
        'histogram_quantile(0.95, sum by (le, stage) (rate(onboarding_decision_stage_seconds_bucket{job="x"}[5m])))'
        " / on(instance) group_left(pool) up offset 5m"
    )
    assert names == {"onboarding_decision_stage_seconds_bucket", "up"}


def test_dashboard_covers_what_on_call_needs() -> None:
    titles = " | ".join(title for title, _expr in dashboard_exprs()).lower()
    for topic in (
        "burn rate", "latency", "per-stage", "decisions per second", "outcomes", "lag", "dead letters", "overdue",
        "scheduler", "archive", "review queue depth", "overdue review cases", "oldest review case", "drift (psi)",
    ):  # fmt: skip
        assert topic in titles, topic
    assert TEST_REDIS_URL  # the known-name fixture uses the test Redis
