"""Every console script of [project.scripts] answers `--version` with the package's version and
`--help` with the environment variables it reads: each name its settings module reads
(found in the source, so a new variable that is not listed fails here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from onboarding.console import package_version

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
STREAMS = ("REDIS_URL", "SIGNUPS_STREAM", "DECISIONS_STREAM", "DEAD_LETTER_STREAM")
# Where each script's settings are read: every variable read there must be in its --help.
SETTINGS = {
    "onboarding-listener": ["listener/settings.py"],
    "onboarding-intake": ["intake/settings.py"],
    "onboarding-publish": [],
    "onboarding-decisions": [],
    "onboarding-deadletters": [],
    "onboarding-model": ["risk/settings.py"],
    "onboarding-train": ["risk/settings.py"],
    "onboarding-stack": ["stack/settings.py"],
    "onboarding-archive": ["archiver/settings.py"],
    "onboarding-sla": ["sla/settings.py"],
    "onboarding-redis-acl": [],
    "onboarding-erase": [],
    "onboarding-access": ["ops/access.py", "ops/k8s_secret.py"],
    "onboarding-review": ["review/settings.py"],
}
ALSO = {  # read through shared settings (StreamSettings, the Airflow client)
    "onboarding-listener": (*STREAMS, "AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"),
    "onboarding-publish": STREAMS,
    "onboarding-decisions": STREAMS,
    "onboarding-deadletters": STREAMS,
    "onboarding-stack": ("REDIS_URL", "SIGNUPS_STREAM", "DECISIONS_STREAM"),
    "onboarding-sla": (*STREAMS, "AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"),
    "onboarding-redis-acl": ("REDIS_ACL_PASSWORD_", "REDIS_URL"),
    "onboarding-erase": (*STREAMS, "AIRFLOW_ADMIN_PASSWORD", "ARCHIVE_DIR"),
    "onboarding-model": ("REDIS_URL", "MODEL_SIGNING_KEY", "MODEL_VERIFY_KEY"),
    "onboarding-train": ("MODEL_SIGNING_KEY",),
    "onboarding-review": ("REDIS_URL",),
    "onboarding-intake": ("REDIS_URL",),
}
READ = re.compile(r'(?:\benv\.\w+|\bEnv\([^)]*\)\.\w+|\bsecret|environ(?:\.get)?|getenv)\s*[\[(]\s*"([A-Z][A-Z0-9_]*)"')


def script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed in the venv: pip install -e ."
    return found


@cache
def run(name: str, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script(name), flag], capture_output=True, text=True, timeout=120)


def read_in(path: str) -> set[str]:
    return set(READ.findall((ROOT / path).read_text()))


def test_every_script_is_covered() -> None:
    assert set(SETTINGS) == set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version(name: str) -> None:
    result = run(name, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == package_version() != "unknown"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_the_environment_it_reads(name: str) -> None:
    result = run(name, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    wanted = {n for path in SETTINGS[name] for n in read_in(path)} | set(ALSO.get(name, ()))
    assert wanted, name
    missing = sorted(n for n in wanted if not re.search(rf"(?<![A-Z0-9_]){n}", text))
    assert not missing, f"{name} --help does not name {missing}"


def test_the_scan_finds_what_settings_read() -> None:
    names = read_in("listener/settings.py")
    assert {"LISTENER_BLOCK_MS", "LISTENER_METRICS_PORT", "LOG_FORMAT"} <= names
    assert {"SLA_PORT", "SLA_PAGE_TOKEN"} <= read_in("sla/settings.py")
