"""The apps' Python client as a distribution (clients/python): its wheel carries the README,
the changelog's current version, `py.typed` and the signup schema it validates with (the
service's, byte for byte), depends on redis and jsonschema only, and mypy sees its types in
an app that installed it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
PROJECT = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
SERVICE_SIGNUP_SCHEMA = ROOT / "onboarding" / "schemas" / "signup.v1.json"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's wheel, built from a copy (an in-tree build leaves build/ and egg-info)."""
    base = tmp_path_factory.mktemp("client-wheel")
    source = base / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = (base / "dist").glob("onboarding_client-*.whl")
    return found


def test_the_wheel_ships_types_readme_and_its_own_version(wheel: Path) -> None:
    assert wheel.name == f"onboarding_client-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"onboarding_client-{VERSION}.dist-info/METADATA").decode())
        shipped_schema = archive.read("onboarding_client/schemas/signup.v1.json")
    assert "onboarding_client/py.typed" in names
    assert shipped_schema == SERVICE_SIGNUP_SCHEMA.read_bytes()
    assert metadata["Version"] == VERSION
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    requires = sorted(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in metadata.get_all("Requires-Dist", []))
    assert requires == ["jsonschema", "redis"]  # and nothing of the service
    body = metadata.get_payload()
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "pip install ./clients/python" in body and "## Version policy" in body


def test_the_client_validates_with_the_service_s_own_signup_schema() -> None:
    """The copy the client ships cannot drift from the service's contract: change both."""
    shipped = CLIENT / "onboarding_client" / "schemas" / "signup.v1.json"
    assert shipped.read_bytes() == SERVICE_SIGNUP_SCHEMA.read_bytes(), (
        "clients/python/onboarding_client/schemas/signup.v1.json differs from onboarding/schemas/signup.v1.json: "
        "copy it and release the client"
    )


def test_the_changelog_lists_the_version_being_shipped() -> None:
    changelog = (CLIENT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.MULTILINE)
    assert released and released[0] == VERSION, f"the newest release in CHANGELOG.md is not {VERSION}"


def test_mypy_sees_the_client_s_types_in_an_app_that_installed_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """PEP 561: installed from its wheel (not from the checkout), the client is typed; an app's
    mistake about what `wait` returns is caught before it runs."""
    venv = tmp_path / "app-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    done = subprocess.run([*install, str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    app = tmp_path / "app.py"
    app.write_text(
        "from onboarding_client import OnboardingClient\n\n"
        "client = OnboardingClient.from_url('redis://127.0.0.1:6379/0')\n"
        "event_id: str = client.submit({}, user_id='u-1')\n"
        "score: float = client.wait(event_id, timeout_s=1)\n"  # wrong: a Decision or None
    )
    mypy = [sys.executable, "-m", "mypy", "--no-incremental", "--python-executable", str(python), str(app)]
    result = subprocess.run(mypy, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "import-untyped" not in result.stdout and "import-not-found" not in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'expression has type "Decision | None", variable has type "float"' in result.stdout, result.stdout
    assert "Found 1 error" in result.stdout
