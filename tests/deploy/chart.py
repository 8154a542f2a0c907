"""The vendored official Airflow Helm chart (deploy/helm/vendor/README.md) and Helm, for the
values and render tests: the chart's own values schema, read from its .tgz, and
`helm template` of a release with our values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
CHART_VERSION = "1.18.0"
CHART = HELM_DIR / "vendor" / f"airflow-{CHART_VERSION}.tgz"
# deploy/helm/vendor/README.md; scripts/setup.sh pins Helm's binary the same way.
CHART_SHA256 = "8286a11351af1b874a08395e7bfa73f32d9694977e24496b516b4c2561e0a622"
NAMESPACE = "onboarding"
KUBERNETES_VERSION = "1.33.0"


@cache
def values_schema() -> dict[str, Any]:
    """The chart's values.schema.json, as packaged in the release's .tgz."""
    with tarfile.open(CHART) as archive:
        member = archive.extractfile("airflow/values.schema.json")
        assert member is not None
        loaded: dict[str, Any] = json.loads(member.read())
    return loaded


def helm() -> str:
    """Helm from scripts/setup.sh (.venv/bin/helm) or PATH; skipped locally, a failure in CI."""
    found = shutil.which("helm") or shutil.which("helm", path=str(ROOT / ".venv" / "bin"))
    if found is None:
        message = "helm is not installed: run scripts/setup.sh (ensure_helm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@cache
def render(release: str) -> tuple[dict[str, Any], ...]:
    """`helm template` of the release with deploy/helm/<release>-values.yaml: every object."""
    result = subprocess.run(
        [
            *(helm(), "template", release, str(CHART), "--namespace", NAMESPACE),
            *("--kube-version", KUBERNETES_VERSION, "--values", str(HELM_DIR / f"{release}-values.yaml")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"helm template {release} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
