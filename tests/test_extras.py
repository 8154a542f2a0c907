"""The dependency extras split the images by role (pyproject.toml, docs/images.md).

The service image installs `onboarding-decisions[service]`: no Airflow and no model
libraries. That holds only while the processes it runs import neither, so every module
the service image's commands load is imported here, in a fresh interpreter, and what it
pulled in is checked. (tests/e2e/test_containers.py runs the listener and the SLA service
from the built image itself; tests/deploy/test_image.py checks each extra's closure is in
requirements.lock.)
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
# What the service image runs (deploy/k8s/*.yaml `args` on registry.example.com/onboarding),
# and the modules each command loads, the rq worker's jobs and `rq cron`'s module included.
SERVICE_MODULES = (
    "listener.cli", "listener.consumer", "intake.cli", "intake.forwarder",
    "sla.cli", "sla.server", "sla.observer", "sla.overdue",
    "review.cli", "review.web", "archiver.cli", "archiver.cron", "archiver.archive", "archiver.store",
    "archiver.erase", "archiver.live_erase", "ops.redis_acl", "rq.cli",
)  # fmt: skip
NOT_IN_THE_SERVICE_IMAGE = ("airflow", "sklearn", "numpy", "scipy", "matplotlib", "skops", "celery", "pandas")


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def test_the_service_extra_has_no_airflow_and_no_model_and_dev_has_every_role() -> None:
    assert not {n for n in names(EXTRAS["service"]) if n.startswith("apache-airflow")}
    assert not names(EXTRAS["service"]) & {"scikit-learn", "numpy", "skops", "matplotlib"}
    assert "apache-airflow" in names(EXTRAS["airflow"])
    airflow_self = [Requirement(r) for r in EXTRAS["airflow"] if Requirement(r).name == PROJECT["name"]]
    assert [sorted(r.extras) for r in airflow_self] == [["model"]]
    dev_self = [Requirement(r) for r in EXTRAS["dev"] if Requirement(r).name == PROJECT["name"]]
    assert [sorted(r.extras) for r in dev_self] == [["airflow", "service"]]
    assert not names(PROJECT["dependencies"]) & (names(EXTRAS["airflow"]) | names(EXTRAS["model"]))


def test_the_service_images_commands_import_without_airflow_and_the_model_libraries() -> None:
    """As in the image, where they are not installed: a finder makes them unimportable
    (this venv has them all; pyarrow, for one, uses numpy when it finds it and works
    without it)."""
    probe = f"""
import importlib, importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_THE_SERVICE_IMAGE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the service image)", name=name)
        return None
sys.meta_path.insert(0, Absent())
for name in {SERVICE_MODULES!r}:
    importlib.import_module(name)
print("imported", len({SERVICE_MODULES!r}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["imported", str(len(SERVICE_MODULES))]
