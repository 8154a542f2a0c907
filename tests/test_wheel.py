"""The package works once installed from its wheel, outside the checkout.

The wheel is built from a copy of the working tree (an in-tree build would leave build/
and *.egg-info in the checkout) and installed with --no-deps into a fresh venv in a
temporary directory. Its dependencies come from the checkout venv's site-packages through
one .pth line: that adds the directory only, so the checkout venv's editable install of
this project (a .pth hook of its own) stays inactive and the checkout is not on sys.path.
Every command then runs from another temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow  # about a minute and a half on 2 cores: each command imports Airflow

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
TRACEBACK = "Traceback (most recent call last)"
# Not part of the package, and large or owned by other processes.
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", "var", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".ruff_cache"
)


def _free_port() -> int:
    """A port nothing listens on (bound, then released: nothing else is started here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The health checks of the long-running commands (arq's `--check`: exit 0 healthy, 1 not),
# each run against nothing: (arguments, extra environment, what the message must say).
def _checks() -> dict[str, list[tuple[list[str], dict[str, str], str]]]:
    nothing = f"redis://127.0.0.1:{_free_port()}/0"
    return {
        "onboarding-listener": [(["check"], {"LISTENER_METRICS_PORT": str(_free_port())}, "did not answer")],
        "onboarding-intake": [(["check"], {"INTAKE_METRICS_PORT": str(_free_port())}, "did not answer")],
        "onboarding-sla": [(["check"], {"SLA_PORT": str(_free_port())}, "did not answer")],
        "onboarding-review": [(["check"], {"REVIEW_PORT": str(_free_port())}, "did not answer")],
        "onboarding-archive": [
            (["check"], {}, "realtime: no successful archive run yet"),
            (["worker-check"], {"REDIS_URL": nothing}, "unhealthy: Redis at"),
        ],
    }


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    cwd: Path  # outside the checkout, empty: the data home defaults to cwd/var
    env: dict[str, str]

    def run(self, argv: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.cwd,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def script(self, name: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.venv / "bin" / name), *args], **extra_env)

    def python(self, code: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.venv / "bin" / "python"), "-c", textwrap.dedent(code)], **extra_env)


def _build_isolation_needed() -> bool:
    """Build in this venv when its setuptools meets [build-system] requires, so nothing is
    downloaded; else let pip fetch the backend (from its cache after the first time)."""
    for line in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return True
        except PackageNotFoundError:
            return True
    return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.is_relative_to(ROOT)
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    wheels = base / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)]
    if not _build_isolation_needed():
        build.insert(4, "--no-build-isolation")
    built = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("onboarding_decisions-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())
    dependencies = Path(sysconfig.get_path("purelib"))  # this (the checkout's) venv
    (site_packages / "checkout_venv_dependencies.pth").write_text(f"{dependencies}\n")

    cwd = base / "elsewhere"
    cwd.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "ONBOARDING_", "RISK_", "ARCHIVE_", "AIRFLOW"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["AIRFLOW_HOME"] = str(base / "airflow")  # whatever Airflow writes on import stays here
    return Installed(wheel, venv, site_packages, cwd, env)


def test_the_wheel_holds_the_packages_their_data_and_the_license(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "onboarding/schemas/signup.v1.json" in names
    assert "risk/data/german_credit.csv" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(installed.wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    # The extras the images install by role (docs/images.md) travel in the wheel's metadata.
    provided = {line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Provides-Extra:")}
    assert provided == set(PYPROJECT["project"]["optional-dependencies"]) >= {"service", "airflow", "model", "dev"}
    for target in SCRIPTS.values():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in names, f"[project.scripts] names {target}, which is not in the wheel"


def test_code_and_data_come_from_the_installed_wheel_and_the_home_from_the_current_directory(
    installed: Installed,
) -> None:
    top_level = sorted(
        {n.split("/")[0] for n in zipfile.ZipFile(installed.wheel).namelist() if "/" in n and ".dist-info" not in n}
    )
    probe = installed.python(
        f"""
        import importlib, json, sys
        from archiver.settings import ArchiveSettings
        from onboarding.schema import SCHEMA_DIR, signup_schema
        from risk.model import DEFAULT_DATA_PATH, load_training_data
        from risk.settings import RiskSettings

        assert signup_schema()["properties"]  # the JSON Schema shipped as package data
        archive = ArchiveSettings.from_env()
        print(json.dumps({{
            "packages": {{name: importlib.import_module(name).__file__ for name in {top_level!r}}},
            "data": [str(SCHEMA_DIR), str(DEFAULT_DATA_PATH)],
            "rows": len(load_training_data().applications),
            "sys_path": sys.path,
            "home": [str(RiskSettings.from_env().model_dir), str(archive.archive_dir), archive.instances[0].url],
        }}))
        """
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for name, file in found["packages"].items():
        assert Path(file).is_relative_to(installed.site_packages), f"{name} imported from {file}"
    for path in found["data"]:
        assert Path(path).is_relative_to(installed.site_packages), path
    assert found["rows"] > 0
    venv_dir = ROOT / ".venv"
    in_checkout = [p for p in found["sys_path"] if (installed.cwd / p).resolve().is_relative_to(ROOT)]
    assert all(Path(p).resolve().is_relative_to(venv_dir) for p in in_checkout), in_checkout
    home = installed.cwd / "var"
    model_dir, archive_dir, realtime_db = found["home"]
    assert Path(model_dir) == home / "models"
    assert Path(archive_dir) == home / "archive"
    assert realtime_db == f"sqlite:///{home}/realtime/airflow.db"


@pytest.fixture(scope="module")
def helps(installed: Installed) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(SCRIPTS, pool.map(lambda name: installed.script(name, "--help"), SCRIPTS), strict=True))


def test_every_console_script_answers_help(helps: dict[str, subprocess.CompletedProcess[str]]) -> None:
    failures = {
        name: (r.returncode, (r.stdout + r.stderr)[-1500:])
        for name, r in helps.items()
        if r.returncode != 0 or not r.stdout.startswith("usage: ") or TRACEBACK in r.stdout + r.stderr
    }
    assert not failures, failures


def test_every_health_check_says_unhealthy_when_nothing_runs(
    installed: Installed, helps: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    checks = _checks()
    pattern = re.compile(r"\{[^}]*\bcheck\b[^}]*\}|--check\b")
    with_check = {name for name, result in helps.items() if pattern.search(result.stdout)}
    assert with_check <= checks.keys(), f"add the health checks of {with_check - checks.keys()} to _checks()"
    runs = [(name, args, env, says) for name, cases in checks.items() if name in SCRIPTS for args, env, says in cases]
    assert runs
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda run: installed.script(run[0], *run[1], **run[2]), runs))
    for (name, args, _, says), result in zip(runs, results, strict=True):
        output = result.stdout + result.stderr
        assert result.returncode == 1, (name, args, result.returncode, output)
        assert says in output, (name, args, output)
        assert TRACEBACK not in output, (name, args, output)


def test_commands_that_read_the_data_home_work_in_a_fresh_directory(installed: Installed) -> None:
    listed = installed.script("onboarding-model", "list")
    assert listed.returncode == 0 and listed.stdout == "", listed.stdout + listed.stderr
    audit = installed.script("onboarding-archive", "audit", "--user-id", "nobody")
    assert audit.returncode == 1
    assert f"0 archived run(s) in {installed.cwd / 'var' / 'archive'}" in audit.stderr
    home = installed.cwd / "elsewhere-home"
    listed = installed.script("onboarding-archive", "audit", "--user-id", "nobody", ONBOARDING_HOME=str(home))
    assert f"in {home / 'archive'}" in listed.stderr
    assert not (installed.cwd / "var").exists(), "reading must not create the data home"


def test_the_local_stack_says_it_needs_a_checkout(installed: Installed) -> None:
    """onboarding-stack runs a checkout's deploy/ and dags/, which no wheel ships."""
    status = installed.script("onboarding-stack", "status")
    output = status.stdout + status.stderr
    assert status.returncode == 1, output
    assert "source checkout" in output and TRACEBACK not in output
