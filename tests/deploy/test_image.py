"""The container images (deploy/docker/, docs/images.md), as far as they can be checked
without Docker.

Nothing here pulls an image or runs `docker build`. Instead the test takes the build
context as Docker would (the checkout filtered by .dockerignore), lays out what the
Dockerfiles COPY, builds the wheel from exactly the build stage's sources and installs it
into a fresh venv outside the checkout. Its dependencies come from the checkout venv's
site-packages through one .pth line, which adds the directory only: the checkout's own
editable install (a .pth hook of its own) stays inactive (as in tests/test_wheel.py). From
there it runs what the images run: every console script's --help, the listener and the
SLA service serving their probes against the test Redis and stopping cleanly on SIGTERM,
the rq worker and `rq cron` of deploy/k8s/rq.yaml with its liveness probe, and each
Airflow instance's DAG folder parsed with the image's airflow_local_settings.py. The
Dockerfiles themselves and the manifests' image references are checked as text.

Image repositories (the manifests' `image:` and the Helm values' `images.airflow`):
    registry.example.com/onboarding          <- deploy/docker/service.Dockerfile
    registry.example.com/onboarding-airflow  <- deploy/docker/airflow.Dockerfile
both tagged with the package version of pyproject.toml.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from testkit.services import free_port
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.slow  # about 35 s on 2 cores: building, installing, importing Airflow

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
AIRFLOW_DOCKERFILE = DOCKER / "airflow.Dockerfile"
SERVICE_DOCKERFILE = DOCKER / "service.Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_VERSION: str = PYPROJECT["project"]["version"]
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
LOCK: dict[str, str] = {
    canonicalize_name(name): pinned
    for name, _, pinned in (
        line.split("#")[0].strip().partition("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
    )
    if pinned
}
REGISTRY = "registry.example.com"
IMAGES = {f"{REGISTRY}/onboarding": SERVICE_DOCKERFILE, f"{REGISTRY}/onboarding-airflow": AIRFLOW_DOCKERFILE}
# Each Airflow instance's DAG folder in the image (airflow.Dockerfile) and its Helm values.
INSTANCES = {"realtime": "/opt/onboarding/dags/realtime", "batch": "/opt/onboarding/dags/batch"}
AIRFLOW_UID = 50000  # the official image's airflow user, the chart's default `uid`
TRACEBACK = "Traceback (most recent call last)"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)
SECRET_FILE = re.compile(
    r"^\.env(\..+)?$|\.(pem|key|p12|pfx|jks|kdbx)$|^id_(rsa|dsa|ecdsa|ed25519)|password|secret|token|credential",
    re.IGNORECASE,
)
EXACT_TAG = re.compile(r"^(?P<repo>[^@\s]+?):(?P<tag>[\w.-]+)(@sha256:[0-9a-f]{64})?$")
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-.][\w.-]+)?$")


# --- .dockerignore: Docker's rules (moby/patternmatcher): the last matching pattern wins,
# `!` re-includes, and a pattern matching a parent directory matches what is below it.


@dataclass(frozen=True)
class Pattern:
    parts: tuple[str, ...]
    regex: re.Pattern[str]
    exclude: bool


def _pattern(line: str) -> Pattern:
    exclude = not line.startswith("!")
    text = os.path.normpath(line.removeprefix("!").strip().lstrip("/"))
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        elif text[i] == "[":
            end = text.index("]", i)
            out, i = out + text[i : end + 1], end + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return Pattern(tuple(text.split("/")), re.compile(f"^{out}$"), exclude)


@dataclass(frozen=True)
class DockerIgnore:
    patterns: tuple[Pattern, ...]

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        lines = [line.strip() for line in path.read_text().splitlines()]
        return cls(tuple(_pattern(line) for line in lines if line and not line.startswith("#")))

    def excluded(self, relpath: str) -> bool:
        parts = relpath.split("/")
        excluded = False
        for pattern in self.patterns:
            if pattern.regex.match(relpath) or (
                len(parts) > len(pattern.parts) and pattern.regex.match("/".join(parts[: len(pattern.parts)]))
            ):
                excluded = pattern.exclude
        return excluded

    def may_include_below(self, relpath: str) -> bool:
        """Whether a `!` pattern could re-include something under this excluded directory."""
        parts = relpath.split("/")
        for pattern in self.patterns:
            if pattern.exclude:
                continue
            for mine, theirs in zip(parts, pattern.parts, strict=False):
                if theirs == "**":
                    return True
                if not fnmatch.fnmatchcase(mine, theirs):
                    break
            else:
                return True
        return False


def build_context() -> set[str]:
    """The files `docker build ... .` sends from the repository root (paths relative to it)."""
    ignore = DockerIgnore.read(ROOT / ".dockerignore")
    files: set[str] = set()
    for directory, dirnames, filenames in os.walk(ROOT):
        here = Path(directory).relative_to(ROOT).as_posix()
        prefix = "" if here == "." else f"{here}/"
        dirnames[:] = [d for d in dirnames if not ignore.excluded(prefix + d) or ignore.may_include_below(prefix + d)]
        files.update(prefix + name for name in filenames if not ignore.excluded(prefix + name))
    return files


# --- Dockerfiles, as text.


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: str


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        parsed = cls(path)
        logical, stage, index = "", "", 0
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            logical += line[:-1] + " " if line.endswith("\\") else line
            if line.endswith("\\"):
                continue
            keyword, _, args = logical.partition(" ")
            if keyword.upper() == "FROM":
                words = args.split()
                stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{index}"
                index += 1
            parsed.instructions.append(Instruction(keyword.upper(), args.strip(), stage))
            logical = ""
        return parsed

    def all(self, keyword: str, stage: str | None = None) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword and stage in (None, i.stage)]

    @property
    def final_stage(self) -> str:
        return self.instructions[-1].stage

    def base_images(self) -> list[str]:
        stages = {i.stage for i in self.all("FROM")}
        return [i.args.split()[0] for i in self.all("FROM") if i.args.split()[0] not in stages]

    def copies(self, stage: str) -> list[tuple[list[str], str]]:
        """(sources, destination) of each COPY from the build context (no --from) in a stage."""
        out = []
        for instruction in self.all("COPY", stage):
            words = shlex.split(instruction.args)
            if any(w.startswith("--from") for w in words):
                continue
            words = [w for w in words if not w.startswith("--")]
            out.append((words[:-1], words[-1]))
        return out

    def copied(self) -> list[str]:
        """Every build-context path any stage COPYs."""
        stages = dict.fromkeys(i.stage for i in self.instructions)
        return [source.rstrip("/") for stage in stages for sources, _ in self.copies(stage) for source in sources]

    def context_mounts(self) -> list[str]:
        """The build-context files RUN --mount=type=bind brings in (without a from=)."""
        sources = []
        for instruction in self.all("RUN"):
            for mount in re.findall(r"--mount=(\S+)", instruction.args):
                options = dict(item.partition("=")[::2] for item in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options["source"])
        return sources


def lay_out(dockerfile: Dockerfile, stage: str, context: set[str], root: Path) -> None:
    """Copy what a stage's COPY instructions take from the context to `root`, as Docker
    would (destinations, absolute or relative to the WORKDIR, taken relative to root)."""
    for sources, destination in dockerfile.copies(stage):
        target = root / destination.lstrip("/")
        into_directory = destination.endswith("/") or len(sources) > 1
        for source in sources:
            source = source.rstrip("/")
            below = sorted(f for f in context if f.startswith(f"{source}/"))
            assert source in context or below, f"{dockerfile.path.name}: COPY {source} is not in the build context"
            if source in context:
                dest = target / Path(source).name if into_directory else target
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, dest)
            for file in below:
                dest = target / file.removeprefix(f"{source}/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / file, dest)


# --- The wheel, built from the build stage's sources and installed outside the checkout.


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    base: Path
    env: dict[str, str]

    def command(self, name: str) -> list[str]:
        """A console script of the image: ours are in the venv; a dependency's (rq) runs as a module."""
        if name in SCRIPTS:
            return [str(self.venv / "bin" / name)]
        return [str(self.venv / "bin" / "python"), "-m", {"rq": "rq.cli"}[name]]

    def sandbox(self, name: str) -> dict[str, Path]:
        """Fresh, empty cwd, HOME and TMPDIR for one process: whatever it writes shows there."""
        dirs = {key: self.base / "sandbox" / name / key for key in ("cwd", "home", "tmp")}
        for path in dirs.values():
            path.mkdir(parents=True)
        return dirs

    def environment(self, sandbox: dict[str, Path], **extra: str) -> dict[str, str]:
        return {**self.env, "HOME": str(sandbox["home"]), "TMPDIR": str(sandbox["tmp"]), **extra}

    def run(
        self, argv: list[str], extra: Mapping[str, str] | None = None, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        sandbox = self.sandbox(f"run-{time.monotonic_ns()}")
        return subprocess.run(
            argv,
            cwd=sandbox["cwd"],
            env=self.environment(sandbox, **(extra or {})),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.venv / "bin" / "python"), "-c", textwrap.dedent(code)])


def _build_isolation_needed() -> bool:
    """Build in this venv when its setuptools meets [build-system] requires (nothing is
    downloaded); else pip fetches the backend (from its cache after the first time)."""
    for line in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return True
        except PackageNotFoundError:
            return True
    return False


@pytest.fixture(scope="module")
def context() -> set[str]:
    return build_context()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, context: set[str]) -> Installed:
    base = tmp_path_factory.mktemp("image")
    assert not base.is_relative_to(ROOT)
    dockerfile = Dockerfile.read(SERVICE_DOCKERFILE)
    source = base / "src"
    lay_out(dockerfile, "build", context, source)
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
    (site_packages / "checkout_venv_dependencies.pth").write_text(f"{sysconfig.get_path('purelib')}\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "ONBOARDING_", "RISK_", "ARCHIVE_", "AIRFLOW", "LISTENER_"))
        and not key.startswith(("SLA_", "REDIS_", "SIGNUPS_", "DECISIONS_", "DEAD_LETTER_", "LOG_"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as in the images (which compile at install time)
    return Installed(wheel, venv, site_packages, base, env)


def wheel_names(installed: Installed) -> set[str]:
    return set(zipfile.ZipFile(installed.wheel).namelist())


# --- (a, c) The wheel: what it holds, where its code is imported from, what it pins.


def test_the_build_context_has_every_copy_source_and_nothing_secret(context: set[str]) -> None:
    for path in (SERVICE_DOCKERFILE, AIRFLOW_DOCKERFILE):
        dockerfile = Dockerfile.read(path)
        for source in [*dockerfile.copied(), *dockerfile.context_mounts()]:
            assert (ROOT / source).exists(), f"{path.name}: {source} does not exist"
            if (ROOT / source).is_dir():
                wanted = {
                    p.relative_to(ROOT).as_posix()
                    for p in (ROOT / source).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not SECRET_FILE.search(p.name)
                }
                assert wanted and wanted <= context, f"{path.name}: .dockerignore drops {sorted(wanted - context)[:5]}"
            else:
                assert source in context, f"{path.name}: .dockerignore drops {source}"
    tops = {f.split("/")[0] for f in context}
    assert not tops & {".venv", "var", ".git", "tests", "testkit", "benchmarks", "build", "dist"}, sorted(tops)
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    secret_looking = [f for f in context if not f.endswith(".py") and SECRET_FILE.search(Path(f).name)]
    assert not secret_looking, secret_looking


def test_both_images_build_the_wheel_from_the_same_sources() -> None:
    service, airflow = Dockerfile.read(SERVICE_DOCKERFILE), Dockerfile.read(AIRFLOW_DOCKERFILE)
    assert service.copies("build") == airflow.copies("build")


def test_the_wheel_holds_every_file_of_the_packages(installed: Installed, context: set[str]) -> None:
    """Every file of a shipped package that reaches the build context is in the wheel: a
    data file without a [tool.setuptools.package-data] entry fails here."""
    names = wheel_names(installed)
    packages = {n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n}
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {f.split("/")[0] for f in context if f.endswith("/__init__.py") and f.count("/") == 1}
    assert packages == {top for top in tops if any(fnmatch.fnmatchcase(top, pattern) for pattern in include)}
    missing = sorted(f for f in context if f.split("/")[0] in packages and f not in names)
    assert not missing, f"in the build context but not in the wheel (package-data?): {missing}"
    shipped = {"onboarding/schemas/signup.v1.json", "risk/data/german_credit.csv", "airflow_adapter/auth_manager.py"}
    assert shipped <= names


def test_code_and_data_come_from_the_fresh_venv(installed: Installed) -> None:
    packages = sorted({n.split("/")[0] for n in wheel_names(installed) if "/" in n and ".dist-info" not in n})
    probe = installed.python(
        f"""
        import importlib, json
        from onboarding.schema import SCHEMA_DIR, signup_schema
        from risk.model import DEFAULT_DATA_PATH
        assert signup_schema()["properties"]
        print(json.dumps({{
            "modules": {{name: importlib.import_module(name).__file__ for name in {packages!r}}},
            "data": [str(SCHEMA_DIR), str(DEFAULT_DATA_PATH)],
        }}))
        """
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for path in [*found["modules"].values(), *found["data"]]:
        assert Path(path).is_relative_to(installed.site_packages), path


def _closure(requirements: list[str], extra: str = "") -> dict[str, str]:
    """Every distribution these requirements of the wheel pull in with its `extra` (extras
    and markers evaluated; the wheel's own extras, e.g. airflow's `onboarding-decisions[model]`,
    expanded from the wheel), with the version installed in this venv: what `pip install` of
    the wheel with that extra resolves."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    own = canonicalize_name(PYPROJECT["project"]["name"])
    todo = [(Requirement(r), extra) for r in requirements]
    while todo:
        requirement, wanted_by = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": wanted_by}):
            continue
        name = canonicalize_name(requirement.name)
        if name == own:
            for wanted in sorted(requirement.extras):
                if (name, wanted) not in seen:
                    seen.add((name, wanted))
                    todo.extend((Requirement(r), wanted) for r in requirements)
            continue
        dist = distribution(name)
        found[name] = dist.version
        for wanted in ["", *sorted(requirement.extras)]:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo.extend((Requirement(r), wanted) for r in dist.requires or [])
    return found


def _wheel_requirements(installed: Installed) -> list[str]:
    names = wheel_names(installed)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(installed.wheel).read(metadata).decode()
    return Parser().parsestr(text).get_all("Requires-Dist") or []


def test_the_lock_pins_every_package_the_images_install(installed: Installed) -> None:
    """Each image installs the wheel with its extra under `--constraint requirements.lock`
    (service.Dockerfile `[service]`, airflow.Dockerfile `[airflow]`): that fixes every version
    only if the lock names every package the wheel pulls in, at the version this suite tests.
    The service image's closure has neither Airflow nor the model's libraries."""
    requirements = _wheel_requirements(installed)
    service, airflow = _closure(requirements, "service"), _closure(requirements, "airflow")
    assert "apache-airflow" in airflow and "scikit-learn" in airflow and "psycopg" in airflow
    assert "rq" in service and "pyarrow" in service and "psycopg" in service
    heavy = {"apache-airflow", "apache-airflow-core", "celery", "scikit-learn", "numpy", "scipy", "matplotlib"}
    assert not heavy & set(service), sorted(heavy & set(service))
    for needed in (service, airflow, _closure(requirements, "dev")):
        unpinned = sorted(name for name in needed if name not in LOCK)
        assert not unpinned, f"not in requirements.lock: {unpinned}"
        differ = {name: (LOCK[name], got) for name, got in needed.items() if LOCK[name] != got}
        assert not differ, f"lock vs tested venv: {differ}"


# --- (b) What the images run, from the fresh venv.


def test_every_console_script_answers_help(installed: Installed) -> None:
    names = [*SCRIPTS, "rq"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(names, pool.map(lambda name: installed.run([*installed.command(name), "--help"]), names)))
    failures = {
        name: (r.returncode, (r.stdout + r.stderr)[-1500:])
        for name, r in helps.items()
        if r.returncode != 0 or "usage:" not in r.stdout.lower() or TRACEBACK in r.stdout + r.stderr
    }
    assert not failures, failures


def _files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


@dataclass
class Service:
    name: str
    process: subprocess.Popen[str]
    sandbox: dict[str, Path]

    def stop(self, timeout_s: float = 60) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return self.process.returncode, out

    def assert_stops_cleanly_having_written_nothing(self) -> None:
        code, out = self.stop()
        assert code == 0 and TRACEBACK not in out, (self.name, code, out[-3000:])
        written = {key: sorted(_files(path)) for key, path in self.sandbox.items() if _files(path)}
        assert not written, f"{self.name} wrote outside its volumes: {written}"


@pytest.fixture
def start(installed: Installed) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def _start(name: str, argv: list[str], **extra: str) -> Service:
        sandbox = installed.sandbox(f"{name}-{len(started)}")
        process = subprocess.Popen(
            argv,
            cwd=sandbox["cwd"],
            env=installed.environment(sandbox, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(Service(name, process, sandbox))
        return started[-1]

    yield _start
    for service in started:
        service.stop(timeout_s=10)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _wait_until_ok(service: Service, url: str, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    status, body = 0, ""
    while time.monotonic() < deadline:
        assert service.process.poll() is None, (service.name, service.stop()[1][-3000:])
        status, body = _get(url)
        if status == 200:
            return body
        time.sleep(0.5)
    raise AssertionError(
        f"{service.name}: {url} answered {status} {body!r} for {timeout_s} s; {service.stop()[1][-3000:]}"
    )


def test_listener_and_sla_serve_their_probes_write_nothing_and_stop_on_sigterm(
    installed: Installed, redis_client: redis.Redis, start: Callable[..., Service]
) -> None:
    """As deploy/k8s/listener.yaml and sla.yaml run them (read-only root filesystem, no /tmp
    volume for the listener): against the test Redis, with Airflow unreachable."""
    streams = {
        "REDIS_URL": TEST_REDIS_URL,
        "SIGNUPS_STREAM": "image-test:signups",
        "DECISIONS_STREAM": "image-test:decisions",
        "DEAD_LETTER_STREAM": "image-test:signups:dead",
        "AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",
        "LOG_FORMAT": "json",
    }
    listener_port, sla_port = free_port(), free_port()
    venv_before = _files(installed.venv)
    listener = start(
        "listener",
        installed.command("onboarding-listener"),
        **streams,
        LISTENER_METRICS_HOST="127.0.0.1",
        LISTENER_METRICS_PORT=str(listener_port),
        LISTENER_CONSUMER="image-test",
    )
    sla = start(
        "sla",
        [*installed.command("onboarding-sla"), "serve"],
        **streams,
        SLA_HOST="127.0.0.1",
        SLA_PORT=str(sla_port),
        SLA_CONSUMER="image-test",
    )
    for service, port, script, check_env in [
        (listener, listener_port, "onboarding-listener", {"LISTENER_METRICS_PORT": str(listener_port)}),
        (sla, sla_port, "onboarding-sla", {"SLA_PORT": str(sla_port)}),
    ]:
        _wait_until_ok(service, f"http://127.0.0.1:{port}/livez")
        _wait_until_ok(service, f"http://127.0.0.1:{port}/readyz")
        check = installed.run([*installed.command(script), "check"], check_env, timeout_s=120)
        assert check.returncode == 0, (script, check.stdout + check.stderr)
    for service in (listener, sla):
        service.assert_stops_cleanly_having_written_nothing()
    assert _files(installed.venv) == venv_before


def test_the_rq_worker_and_cron_run_and_pass_their_liveness_probe(
    installed: Installed, redis_client: redis.Redis, start: Callable[..., Service]
) -> None:
    """deploy/k8s/rq.yaml's commands, and its worker's exec probe, from the fresh venv."""
    manifests = {c["name"]: c for c in _containers(ROOT / "deploy" / "k8s" / "rq.yaml")}
    environment = {"REDIS_URL": TEST_REDIS_URL, "ARCHIVE_DIR": str(installed.base / "archive"), "LOG_FORMAT": "json"}

    def argv(args: list[str]) -> list[str]:
        return [*installed.command(args[0]), *(TEST_REDIS_URL if a == "$(REDIS_URL)" else a for a in args[1:])]

    probe = manifests["worker"]["livenessProbe"]["exec"]["command"]
    before = installed.run(argv(probe), environment)
    assert before.returncode == 1 and "no rq worker" in before.stdout, before.stdout + before.stderr
    worker = start("rq-worker", argv(manifests["worker"]["args"]), **environment)
    cron = start("rq-cron", argv(manifests["cron"]["args"]), **environment)
    deadline, result = time.monotonic() + 90, before
    while time.monotonic() < deadline and result.returncode != 0:
        for service in (worker, cron):
            assert service.process.poll() is None, (service.name, service.stop()[1][-3000:])
        time.sleep(1)
        result = installed.run(argv(probe), environment)
    assert result.returncode == 0, result.stdout + result.stderr
    for service in (worker, cron):
        service.assert_stops_cleanly_having_written_nothing()


# The DAG parse of tests/test_dags.py, in the image's layout: AIRFLOW_HOME with the image's
# config/airflow_local_settings.py, and one instance's DAG folder.
PARSE = """
import importlib, json, sys
import airflow.settings
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print("RESULT" + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "local_settings": getattr(sys.modules.get("airflow_local_settings"), "__file__", None),
    "modules": {
        m: importlib.import_module(m).__file__ for m in ("airflow_adapter.auth_manager", "airflow_adapter.tasks")
    },
    "auth_manager": importlib.import_module("airflow_adapter.auth_manager").OnboardingFabAuthManager.__name__,
}))
"""


def test_each_airflow_instance_parses_its_dag_folder_from_the_image_layout(
    installed: Installed, context: set[str]
) -> None:
    dockerfile = Dockerfile.read(AIRFLOW_DOCKERFILE)
    root = installed.base / "airflow-image"
    lay_out(dockerfile, dockerfile.final_stage, context, root)
    airflow_home = root / "opt" / "airflow"
    assert (airflow_home / "config" / "airflow_local_settings.py").is_file()

    def parse(instance: str) -> dict[str, Any]:
        folder = root / INSTANCES[instance].lstrip("/")
        result = installed.run(
            [str(installed.venv / "bin" / "python"), "-c", PARSE, str(folder)],
            {"AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        )
        assert result.returncode == 0, (instance, result.stderr[-3000:])
        line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
        return json.loads(line.removeprefix("RESULT"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        parsed = dict(zip(INSTANCES, pool.map(parse, INSTANCES), strict=True))
    assert parsed["realtime"]["dags"] == ["onboarding"]
    assert parsed["batch"]["dags"] and "onboarding" not in parsed["batch"]["dags"]
    for instance, found in parsed.items():
        assert found["errors"] == {}, (instance, found["errors"])
        assert found["local_settings"] == str(airflow_home / "config" / "airflow_local_settings.py"), instance
        assert found["auth_manager"] == "OnboardingFabAuthManager"
        for module, file in found["modules"].items():
            assert Path(file).is_relative_to(installed.site_packages), (instance, module, file)


# --- (d) The Dockerfiles and the manifests' image references, as text.


@pytest.mark.parametrize("path", [SERVICE_DOCKERFILE, AIRFLOW_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_pins_runs_as_non_root_installs_from_the_lock_and_bakes_no_secret(path: Path) -> None:
    dockerfile = Dockerfile.read(path)
    python = PYPROJECT["project"]["requires-python"]
    for image in dockerfile.base_images():
        match = EXACT_TAG.match(image)
        assert match, f"{path.name}: FROM {image} has no tag"
        tag = match["tag"]
        assert tag != "latest" and re.match(r"^(\d+\.\d+\.\d+)", tag), f"{path.name}: FROM {image} is not exact"
        minor = re.search(r"python(3\.\d+)", tag) or re.match(r"(3\.\d+)", tag)
        assert minor and f">={minor[1]}" in python, f"{path.name}: {image} is not Python {python}"

    users = dockerfile.all("USER")
    assert users and users[-1].stage == dockerfile.final_stage
    uid = users[-1].args.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path.name}: the last USER must be a numeric non-root uid"

    for instruction in dockerfile.all("ENV") + dockerfile.all("ARG"):
        names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", instruction.args) or instruction.args.split()[:1]
        assert not [n for n in names if SECRET_NAME.search(n)], f"{path.name}: {instruction.keyword} {instruction.args}"
    assert not dockerfile.all("ADD"), "COPY only: ADD fetches URLs and unpacks archives"
    copied = dockerfile.copied()
    assert not [s for s in copied if SECRET_FILE.search(Path(s).name) or s.split("/")[0] in ("var", ".venv")]

    # Every install resolves under the lock; only building the project's own wheel needs none.
    commands = [shlex.split(c) for i in dockerfile.all("RUN") for c in i.args.split("&&")]
    pips = [c for c in commands if "pip" in c]
    installs = [" ".join(c) for c in pips if "install" in c or ("wheel" in c and "--no-deps" not in c)]
    assert installs and all(re.search(r"(--constraint|-c)[ =]\S*requirements\.lock", a) for a in installs), installs
    assert "requirements.lock" in dockerfile.context_mounts() + copied
    assert dockerfile.all("HEALTHCHECK"), f"{path.name}: say HEALTHCHECK NONE (and why) or give one"


def test_the_airflow_image_is_the_locked_airflow_version() -> None:
    (image,) = [i for i in Dockerfile.read(AIRFLOW_DOCKERFILE).base_images() if i.startswith("apache/airflow:")]
    match = re.match(r"apache/airflow:(\d+\.\d+\.\d+)-python(3\.\d+)", image)
    assert match, image
    # Airflow is the airflow extra's (the image installs it); the service extra has none.
    extras = PYPROJECT["project"]["optional-dependencies"]
    requirements = [Requirement(r) for r in [*PYPROJECT["project"]["dependencies"], *extras["airflow"]]]
    pinned = [r for r in requirements if r.name == "apache-airflow"]
    assert not [r for r in map(Requirement, extras["service"]) if r.name.startswith("apache-airflow")]
    assert [str(r.specifier) for r in pinned] == [f"=={match[1]}"]
    assert LOCK["apache-airflow"] == match[1]
    for values in _helm_values().values():
        assert values["airflowVersion"] == values["defaultAirflowTag"] == match[1]


def test_the_service_image_runs_what_the_manifests_ask_as_their_user() -> None:
    dockerfile = Dockerfile.read(SERVICE_DOCKERFILE)
    final = dockerfile.final_stage
    assert not dockerfile.all("ENTRYPOINT", final), "the manifests give args only: args[0] must be the command"
    available = set(SCRIPTS) | {"rq"}  # rq: the rq dependency's console script
    users: set[str] = set()
    pods = [doc for doc in _k8s_documents() if _pod_spec(doc) is not None]
    for doc in pods:
        spec = _pod_spec(doc)
        assert spec is not None
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if not container["image"].startswith(f"{REGISTRY}/onboarding:"):
                continue
            where = f"{doc['metadata']['name']}/{container['name']}"
            argv = container.get("command") or container["args"]
            assert argv[0] in available, f"{where}: {argv[0]} is not a command of the image"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                assert command is None or command[0] in available, f"{where}: {probe} runs {command}"
            context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsUser", 0) != 0 and context.get("runAsNonRoot", True), where
            users.add(f"{context['runAsUser']}:{context.get('runAsGroup', 0)}")
    # The image's own user is one the manifests run it as (the Redis pods' ACL init
    # container runs it as the redis user instead: the venv is world-readable).
    assert dockerfile.all("USER", final)[-1].args in users, users
    assert all(values.get("uid", AIRFLOW_UID) == AIRFLOW_UID for values in _helm_values().values())
    airflow_user = Dockerfile.read(AIRFLOW_DOCKERFILE).all("USER")[-1].args
    assert airflow_user.split(":")[0] == str(AIRFLOW_UID)


def test_every_image_reference_is_pinned_and_ours_name_a_dockerfile_and_the_package_version() -> None:
    manifests = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    references = [(path.name, container["image"]) for path in manifests for container in _containers(path)]
    for name, values in _helm_values().items():
        image = values["images"]["airflow"]
        references.append((name, f"{image['repository']}:{image['tag']}"))
    problems = []
    for where, image in references:
        match = EXACT_TAG.match(image)
        if not match:
            problems.append(f"{where}: {image} has no tag")
        elif match["repo"].startswith(f"{REGISTRY}/"):
            if match["repo"] not in IMAGES:
                problems.append(f"{where}: {image} is built by no Dockerfile in deploy/docker/")
            elif match["tag"] != PACKAGE_VERSION:
                problems.append(f"{where}: {image} is not tagged with the package version {PACKAGE_VERSION}")
        elif not EXACT_VERSION.match(match["tag"]):
            problems.append(f"{where}: {image} is not pinned to an exact version")
    assert not problems, problems


def test_each_airflow_release_uses_the_images_dag_folder_local_settings_and_auth_manager() -> None:
    """The chart's default DAG folder ($AIRFLOW_HOME/dags) is empty in the image; the chart
    mounts its own airflow_local_settings.py over the image's unless told not to (the
    realtime instance needs the image's; the batch instance does without); and the chart
    writes airflow.cfg from `config:` alone, so the instance's auth manager must be there."""
    dockerfile = Dockerfile.read(AIRFLOW_DOCKERFILE)
    copies = {dest.rstrip("/") for _, dest in dockerfile.copies(dockerfile.final_stage)}
    problems = []
    for name, values in _helm_values().items():
        instance = name.removesuffix("-values.yaml")
        assert INSTANCES[instance] in copies
        env = {e["name"]: e.get("value") for e in values.get("env", [])}
        folder = (
            values.get("dags", {}).get("mountPath")
            or values.get("config", {}).get("core", {}).get("dags_folder")
            or env.get("AIRFLOW__CORE__DAGS_FOLDER")
        )
        if folder != INSTANCES[instance]:
            problems.append(f"{name}: the DAG folder is {folder or 'the chart default'}, not {INSTANCES[instance]}")
        if instance == "realtime" and values.get("airflowLocalSettings", "chart default") is not None:
            problems.append(f"{name}: airflowLocalSettings must be null, or the chart hides the image's file")
        cfg = configparser.ConfigParser()
        cfg.read(ROOT / "deploy" / instance / "airflow.cfg")
        wanted = cfg.get("core", "auth_manager", fallback=None)
        configured = values.get("config", {}).get("core", {}).get("auth_manager")
        if wanted is not None and configured != wanted:
            problems.append(
                f"{name}: config.core.auth_manager is {configured}, not {wanted} (deploy/{instance}/airflow.cfg)"
            )
    assert not problems, problems


def _k8s_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


def _containers(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    specs = [spec for spec in map(_pod_spec, docs) if spec is not None]
    return [c for s in specs for c in s.get("containers", []) + s.get("initContainers", [])]


def _helm_values() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "deploy" / "helm").glob("*-values.yaml"))}
