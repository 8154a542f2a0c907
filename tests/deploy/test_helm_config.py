"""One source of truth per Airflow instance: the Helm values' `config:` (which the chart writes
into airflow.cfg) says what deploy/<instance>/airflow.cfg says, key for key, security
settings included. The only differences allowed are listed in ALLOWED_DIFFERENCES, each
with its reason; a new key in either file, or a changed value, fails with the list of
differences, and so does an allowance that no longer matches a difference."""

from __future__ import annotations

import ast
import configparser
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = ("realtime", "batch")


@dataclass(frozen=True)
class Allowed:
    instance: str  # "realtime", "batch" or "*" (both)
    section: str
    key: str
    reason: str


ALLOWED_DIFFERENCES = (
    Allowed(
        "*",
        "core",
        "executor",
        "LocalExecutor on one machine; in the cluster CeleryExecutor, which the chart sets from its "
        "own `executor:` value (a config: entry would contradict it)",
    ),
    Allowed(
        "realtime",
        "core",
        "parallelism",
        "the cluster's slots (up to 8 Celery workers x 8) instead of the 8 forked workers a 2-core laptop can run",
    ),
    Allowed("batch", "core", "parallelism", "the Celery worker's 2 slots with headroom instead of a laptop's 2"),
    Allowed(
        "batch",
        "core",
        "dags_are_paused_at_creation",
        "locally new batch DAGs start paused so the first `up` does not retrain on a laptop; production runs them",
    ),
    Allowed(
        "batch",
        "core",
        "simple_auth_manager_passwords_file",
        "a path: the Secret batch-airflow-admin mounted into the api-server; locally the stack sets it by "
        "environment into the instance home",
    ),
    Allowed(
        "*",
        "api",
        "host",
        "127.0.0.1 keeps a laptop's API off the network; in a pod the api-server must listen on the pod's "
        "address for its Service (Airflow's default, 0.0.0.0)",
    ),
    Allowed(
        "*",
        "metrics",
        "statsd_host",
        "locally the exporter beside the instance (127.0.0.1); in the cluster the chart's default, the "
        "release's own statsd Service",
    ),
    Allowed(
        "batch",
        "metrics",
        "statsd_port",
        "9135 locally so the batch exporter does not collide with realtime's 9125 on one machine; in the "
        "cluster each release has its own exporter on the chart's port 9125",
    ),
    Allowed(
        "*",
        "celery",
        "worker_concurrency",
        "Celery runs in the cluster only (locally LocalExecutor; the scale-out test sets it by environment)",
    ),
    Allowed(
        "realtime",
        "celery",
        "worker_prefetch_multiplier",
        "Celery runs in the cluster only (locally LocalExecutor; the scale-out test sets it by environment)",
    ),
)

# Settings whose value is a credential: neither file may carry them. They reach the pods from
# Kubernetes Secrets (jwtSecretName, apiSecretKeySecretName, fernetKeySecretName, data.*) and
# the local processes from the environment (stack/instance.py).
SECRET_KEYS = {
    ("api_auth", "jwt_secret"),
    ("api", "secret_key"),
    ("webserver", "secret_key"),
    ("core", "fernet_key"),
    ("database", "sql_alchemy_conn"),
    ("core", "sql_alchemy_conn"),
    ("celery", "broker_url"),
    ("celery", "result_backend"),
}


def cfg_settings(instance: str) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "deploy" / instance / "airflow.cfg")
    return {(section, key): value.strip() for section in parser.sections() for key, value in parser.items(section)}


def values(instance: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "helm" / f"{instance}-values.yaml").read_text())
    return loaded


def _normalise(value: object) -> str:
    """airflow.cfg spells booleans True/False; YAML may hold them as bools or strings."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value).strip()


def values_settings(instance: str) -> dict[tuple[str, str], str]:
    config = values(instance).get("config", {})
    return {(section, key): _normalise(value) for section, keys in config.items() for key, value in keys.items()}


def allowed_for(instance: str) -> dict[tuple[str, str], Allowed]:
    return {(a.section, a.key): a for a in ALLOWED_DIFFERENCES if a.instance in ("*", instance)}


def differences(instance: str) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    local, helm = cfg_settings(instance), values_settings(instance)
    return {
        name: (local.get(name), helm.get(name))
        for name in sorted(local.keys() | helm.keys())
        if local.get(name) != helm.get(name)
    }


@pytest.mark.parametrize("instance", INSTANCES)
def test_helm_config_is_the_instances_airflow_cfg(instance: str) -> None:
    allowed = allowed_for(instance)
    unexplained = {name: pair for name, pair in differences(instance).items() if name not in allowed}
    diff = "\n".join(
        f"  [{section}] {key}: airflow.cfg={local!r} values={helm!r}"
        for (section, key), (local, helm) in unexplained.items()
    )
    assert not unexplained, (
        f"deploy/{instance}/airflow.cfg and deploy/helm/{instance}-values.yaml `config:` differ "
        f"(None = not set there); make them equal or add the key with its reason to ALLOWED_DIFFERENCES:\n{diff}"
    )


@pytest.mark.parametrize("instance", INSTANCES)
def test_every_allowed_difference_is_still_a_difference(instance: str) -> None:
    stale = sorted(set(allowed_for(instance)) - set(differences(instance)))
    assert not stale, f"{instance}: ALLOWED_DIFFERENCES entries that match no difference any more: {stale}"


def test_the_comparison_catches_a_changed_value(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = values("realtime")
    changed["config"]["scheduler"]["scheduler_idle_sleep_time"] = "1"
    monkeypatch.setattr(sys.modules[__name__], "values", lambda instance: changed)
    assert differences("realtime")[("scheduler", "scheduler_idle_sleep_time")] == ("0.05", "1")


@pytest.mark.parametrize("instance", INSTANCES)
def test_no_credential_in_either_config(instance: str) -> None:
    for name in SECRET_KEYS:
        assert name not in cfg_settings(instance), f"deploy/{instance}/airflow.cfg sets {name}"
        assert name not in values_settings(instance), f"{instance}-values.yaml config: sets {name}"
    for section, key in values_settings(instance):
        assert not any(word in key for word in ("password", "secret", "token")) or key.endswith("_file"), (
            section,
            key,
        )


def test_production_realtime_has_the_security_set_up() -> None:
    """docs/security.md C1-C3 in the chart's airflow.cfg: FAB with the onboarding auth manager,
    short-lived tokens, permissions synced by the access Job only."""
    helm = values_settings("realtime")
    module, _, cls = helm[("core", "auth_manager")].rpartition(".")
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert cls in {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)}
    assert helm[("api_auth", "jwt_expiration_time")] == "3600"
    assert helm[("fab", "update_fab_perms")] == "False"
    assert helm[("api", "expose_config")] == "False"
    assert values("realtime")["executor"] == "CeleryExecutor"
