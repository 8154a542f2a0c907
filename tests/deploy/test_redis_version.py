"""Redis in production is a release with the Lua CVE fixes (issue 28, item 4): every Redis
image in deploy/ is 7.4.6 or later (onboarding/redis_version.py), and `maxmemory` is set
with a policy that refuses writes, sized below the container's memory limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from onboarding import redis_version

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = re.compile(r"^\s*-?\s*image:\s*[\"']?(?P<image>(?:[\w.-]+/)*redis:[^\s\"'#]+)", re.MULTILINE)
UNITS = {"kb": 1000, "k": 1000, "mb": 1000**2, "m": 1000**2, "gb": 1000**3, "g": 1000**3}
K8S_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def redis_images() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for match in IMAGE.finditer(path.read_text()):
            found.append((str(path.relative_to(ROOT)), match["image"]))
    return found


def test_every_redis_image_in_deploy_has_the_lua_cve_fixes() -> None:
    images = redis_images()
    assert len(images) >= 2, images  # the primary and the replica at least
    for where, image in images:
        tag = image.rsplit(":", 1)[1]
        assert redis_version.is_fixed(redis_version.parse(tag)), f"{where}: {image} is below 7.4.6"


def test_the_helm_releases_bring_no_redis_of_their_own() -> None:
    """The Airflow chart's bundled Redis would be a second, unpinned one: it stays off."""
    for path in sorted((DEPLOY / "helm").glob("*-values.yaml")):
        values = yaml.safe_load(path.read_text())
        assert values.get("redis", {}).get("enabled") is False, path.name


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("7.0.15", False),  # Debian 12
        ("7.4.2", False),  # the old pin
        ("7.4.5", False),
        ("redis:7.4.6", True),
        ("7.4.7-alpine", True),
        ("8.0.3", False),
        ("8.0.4", True),
        ("8.2.1", False),
        ("8.2.2", True),
        ("8.4.0", True),
        ("9.0.0", True),
        ("7.2.11", False),  # fixed upstream, but below the project's minimum
        ("6.2.20", False),
    ],
)
def test_the_version_comparison(text: str, fixed: bool) -> None:
    version = redis_version.parse(text)
    assert redis_version.is_fixed(version) is fixed
    assert (redis_version.warning(version) is None) is fixed


def test_the_warning_names_the_version_and_the_cves_and_says_not_for_production() -> None:
    warning = redis_version.warning((7, 0, 15))
    assert warning is not None
    assert "7.0.15" in warning and "7.4.6" in warning and "CVE-2025-49844" in warning
    assert "must not hold production data" in warning
    with pytest.raises(ValueError):
        redis_version.parse("latest")


def _redis_conf() -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "redis.yaml").read_text()) if d]
    conf = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["redis.conf"]
    pairs = (line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {key: value.strip() for key, value in pairs}


def _bytes(value: str, units: dict[str, int]) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", value)
    assert match, value
    return int(match[1]) * units.get(match[2], 1) if match[2] else int(match[1])


def test_maxmemory_is_set_refuses_writes_and_leaves_headroom_below_the_pod_limit() -> None:
    conf = _redis_conf()
    assert conf["maxmemory-policy"] == "noeviction"  # refuse writes, never drop a signup
    maxmemory = _bytes(conf["maxmemory"].lower(), UNITS)
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "redis.yaml").read_text()) if d]
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis")
        limit = _bytes(container["resources"]["limits"]["memory"], K8S_UNITS)
        # The AOF rewrite's fork (copy-on-write), client and replication buffers live above
        # maxmemory: at most two thirds of the limit, and not a token value either.
        assert 0.4 * limit <= maxmemory <= limit * 2 / 3, (sts["metadata"]["name"], maxmemory, limit)
