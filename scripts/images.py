#!/usr/bin/env python3
"""Build the two container images on this machine, with podman, and report their sizes.

    .venv/bin/python scripts/images.py build [--context DIR] [--json FILE]
    .venv/bin/python scripts/images.py sizes

Builds deploy/docker/service.Dockerfile and deploy/docker/airflow.Dockerfile unchanged.
Where no image registry is reachable, their base images are made here first
(deploy/docker/local-base/): a Debian 12 root filesystem from mmdebstrap becomes
`python:3.11.14-slim-bookworm`, and that plus Airflow from PyPI (under requirements.lock)
becomes `apache/airflow:3.3.2-python3.11`; `--pull=never` makes `FROM` find them locally.
Builds reach PyPI through the host's network with its CA bundle mounted.

Every image is tagged by a content hash of its inputs (the Dockerfile, every file it takes
from the build context, its base image's id), `localhost/<name>:<hash>`, and a build whose
tag exists is skipped: repeated runs on one machine rebuild nothing. The images also get the
tags the manifests name (registry.example.com/<name>:<package version>).

Needs root and the Debian packages podman, buildah, runc, fuse-overlayfs, slirp4netns,
uidmap, mmdebstrap (scripts/setup.sh: ensure_container_tools). Environment variables read:
  ONBOARDING_HOME   the data home (default: var/ in the checkout); the build cache, the
                    containers.conf and the root filesystem go to $ONBOARDING_HOME/images
  HOST_CA_BUNDLE    the CA bundle mounted into builds (default /etc/ssl/certs/ca-certificates.crt)
  DEBIAN_SUITE      the Debian release of the local base (default bookworm)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = "1.0.0"
ROOT = Path(__file__).resolve().parent.parent
LOCAL_BASE = ROOT / "deploy" / "docker" / "local-base"
REGISTRY = "registry.example.com"
TOOLS = ("podman", "buildah", "runc", "mmdebstrap", "fuse-overlayfs")
# The two host quirks of this kind of machine: crun fails on hybrid cgroups and on the
# default RLIMIT_NOFILE; runc with explicit limits works.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
PYTHON_BASE = "docker.io/library/python:3.11.14-slim-bookworm"
AIRFLOW_BASE = "docker.io/apache/airflow:3.3.2-python3.11"
KEEP = 3  # content-hash builds kept per image
ROOTFS_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "dumb-init")


class BuildError(Exception):
    """A tool is missing or a build step failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    ca_bundle: Path
    suite: str

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("ONBOARDING_HOME") or ROOT / "var")
        return cls(
            cache_dir=home / "images",
            ca_bundle=Path(os.environ.get("HOST_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt"),
            suite=os.environ.get("DEBIAN_SUITE") or "bookworm",
        )


@dataclass(frozen=True)
class Built:
    """One image: its content-hash tag, id, uncompressed size, and the seconds its build took
    (0 when an image from the same inputs existed)."""

    name: str
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    reused: bool


def podman_env(settings: Settings) -> dict[str, str]:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    conf = settings.cache_dir / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def run(argv: list[str], env: dict[str, str], what: str, log: Path | None = None) -> str:
    """Run a command; on failure raise BuildError with its last output lines."""
    if log is None:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        output = result.stdout + result.stderr
    else:
        with log.open("w") as out:
            result = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, check=False)
        output = log.read_text()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        where = f" (full log: {log})" if log else ""
        raise BuildError(f"{what} failed ({result.returncode}){where}:\n{tail}")
    return result.stdout if log is None else output


def image_exists(ref: str, env: dict[str, str]) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], env=env, check=False).returncode == 0


def inspect(ref: str, env: dict[str, str]) -> tuple[str, int]:
    out = run(["podman", "image", "inspect", "--format", "{{.Id}} {{.Size}}", ref], env, f"inspecting {ref}")
    image_id, size = out.split()
    return image_id, int(size)


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16]


def _logical_lines(dockerfile: str) -> list[str]:
    lines, current = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def context_sources(dockerfile: str) -> list[str]:
    """What a Dockerfile takes from its build context: COPY sources (without --from) and
    RUN --mount=type=bind sources (without from=)."""
    sources: list[str] = []
    for line in _logical_lines(dockerfile):
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "COPY":
            words = shlex.split(args)
            if not any(w.startswith("--from") for w in words):
                sources += [w.rstrip("/") for w in words if not w.startswith("--")][:-1]
        elif keyword.upper() == "RUN":
            for mount in re.findall(r"--mount=(\S+)", args):
                options = dict(item.partition("=")[::2] for item in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options["source"])
    return sources


def context_digest(dockerfile: Path, context: Path, *extra: str) -> str:
    """The content hash of a build: the Dockerfile, every file it takes from the context
    (paths and bytes; caches excluded, as .dockerignore does), and `extra` (base image ids)."""
    text = dockerfile.read_text()
    parts: list[bytes | str] = [text, *extra]
    for source in sorted(set(context_sources(text))):
        path = context / source
        if not path.exists():
            raise BuildError(f"{dockerfile.name}: {source} is not in the build context {context}")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            rel = file.relative_to(context).as_posix()
            if "__pycache__" in file.parts or file.suffix in (".pyc", ".pyo") or ".egg-info" in rel:
                continue
            parts += [rel, file.read_bytes()]
    return digest(*parts)


def package_version(context: Path) -> str:
    return str(tomllib.loads((context / "pyproject.toml").read_text())["project"]["version"])


class Builder:
    def __init__(self, settings: Settings, total_steps: int) -> None:
        self.settings = settings
        self.env = podman_env(settings)
        self.step, self.total = 0, total_steps

    def say(self, message: str) -> None:
        self.step += 1
        print(f"[{self.step}/{self.total}] {message}", flush=True)

    def build(self, dockerfile: Path, context: Path, tags: list[str], log_name: str, *options: str) -> None:
        if not self.settings.ca_bundle.is_file():
            raise BuildError(f"the host CA bundle {self.settings.ca_bundle} does not exist (HOST_CA_BUNDLE)")
        argv = [
            "podman", "build", "--pull=never", "--no-cache", "--layers=false", "--network=host", "--format=docker",
            "--volume", f"{self.settings.ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
            "-f", str(dockerfile), *(f"--tag={t}" for t in tags), *options, str(context),
        ]  # fmt: skip
        run(argv, self.env, f"podman build -f {dockerfile.name}", self.settings.cache_dir / f"{log_name}.log")

    def python_base(self) -> Built:
        """python:3.11.14-slim-bookworm, from an mmdebstrap root filesystem."""
        dockerfile = LOCAL_BASE / "python.Dockerfile"
        key = digest(dockerfile.read_bytes(), self.settings.suite, *ROOTFS_PACKAGES)
        tag = f"localhost/onboarding-local-base/python:{key}"
        self.say(f"base {PYTHON_BASE} (local, {tag})")
        started = time.monotonic()
        reused = image_exists(tag, self.env)
        if not reused:
            rootfs = self.settings.cache_dir / f"rootfs-{self.settings.suite}.tar"
            mmdebstrap = [
                "mmdebstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
                self.settings.suite, str(rootfs),
            ]  # fmt: skip
            print(f"      mmdebstrap {self.settings.suite} ({', '.join(ROOTFS_PACKAGES)})", flush=True)
            run(mmdebstrap, self.env, "mmdebstrap", self.settings.cache_dir / "mmdebstrap.log")
            imported = f"localhost/onboarding-local-base/rootfs:{key}"
            run(["podman", "import", str(rootfs), imported], self.env, "podman import")
            rootfs.unlink()
            self.build(dockerfile, LOCAL_BASE, [tag], "python-base", f"--build-arg=ROOTFS={imported}")
            run(["podman", "rmi", imported], self.env, "podman rmi")
        run(["podman", "tag", tag, PYTHON_BASE], self.env, "podman tag")
        return self._built("python-base", tag, started, reused)

    def airflow_base(self, python_base: Built) -> Built:
        """apache/airflow:3.3.2-python3.11: the local python base, the official layout, Airflow from PyPI."""
        dockerfile = LOCAL_BASE / "airflow.Dockerfile"
        lock = (ROOT / "requirements.lock").read_bytes()
        key = digest(dockerfile.read_bytes(), (LOCAL_BASE / "entrypoint").read_bytes(), lock, python_base.image_id)
        tag = f"localhost/onboarding-local-base/airflow:{key}"
        self.say(f"base {AIRFLOW_BASE} (local, {tag})")
        started = time.monotonic()
        reused = image_exists(tag, self.env)
        if not reused:
            with tempfile.TemporaryDirectory() as tmp:
                context = Path(tmp)
                shutil.copy2(LOCAL_BASE / "entrypoint", context / "entrypoint")
                shutil.copy2(ROOT / "requirements.lock", context / "requirements.lock")
                self.build(dockerfile, context, [tag], "airflow-base")
        run(["podman", "tag", tag, AIRFLOW_BASE], self.env, "podman tag")
        return self._built("airflow-base", tag, started, reused)

    def project_image(self, name: str, dockerfile: Path, context: Path, bases: list[Built]) -> Built:
        key = context_digest(dockerfile, context, *(b.image_id for b in bases))
        tag = f"localhost/{name}:{key}"
        self.say(f"{name} from {dockerfile.relative_to(context)} ({tag})")
        started = time.monotonic()
        reused = image_exists(tag, self.env)
        if not reused:
            # --no-cache: buildah 1.28 mounts nothing for RUN --mount=type=bind,from=STAGE
            # when that stage came from its cache.
            self.build(dockerfile, context, [tag], name)
        run(["podman", "tag", tag, f"{REGISTRY}/{name}:{package_version(context)}"], self.env, "podman tag")
        built = self._built(name, tag, started, reused)
        self.forget_old(name)
        return built

    def forget_old(self, name: str) -> None:
        """Keep the KEEP newest content-hash builds of an image: every source change makes a
        new one, and a CI machine builds many (the released tag's image stays)."""
        listed = run(
            ["podman", "images", "--format", "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}", f"localhost/{name}"],
            self.env,
            "podman images",
        )
        lines = sorted(listed.splitlines(), reverse=True)
        refs = [ref for _, _, ref in (line.partition("\t") for line in lines) if ref.startswith(f"localhost/{name}:")]
        for ref in refs[KEEP:]:
            subprocess.run(["podman", "rmi", ref], env=self.env, capture_output=True, check=False)

    def _built(self, name: str, tag: str, started: float, reused: bool) -> Built:
        image_id, size = inspect(tag, self.env)
        seconds = 0.0 if reused else round(time.monotonic() - started, 1)
        what = "reused (same inputs)" if reused else f"built in {seconds:.0f} s"
        print(f"      {what}: {size / 1e6:.0f} MB", flush=True)
        return Built(name, tag, image_id, size, seconds, reused)


def build_all(settings: Settings, context: Path) -> list[Built]:
    missing = missing_tools()
    if missing:
        raise BuildError(
            f"missing container tools: {', '.join(missing)} (Debian: apt-get install podman buildah runc "
            "fuse-overlayfs slirp4netns uidmap mmdebstrap; scripts/setup.sh ensure_container_tools)"
        )
    if os.geteuid() != 0:
        raise BuildError("run as root: the local bases and the builds use rootful podman and mmdebstrap")
    builder = Builder(settings, total_steps=4)
    python_base = builder.python_base()
    airflow_base = builder.airflow_base(python_base)
    docker = context / "deploy" / "docker"
    service = builder.project_image("onboarding", docker / "service.Dockerfile", context, [python_base])
    airflow = builder.project_image(
        "onboarding-airflow", docker / "airflow.Dockerfile", context, [python_base, airflow_base]
    )
    return [python_base, airflow_base, service, airflow]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/images.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="environment variables read:" + (__doc__ or "").split("Environment variables read:")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build (or reuse) both images and their local bases")
    build.add_argument("--context", type=Path, default=ROOT, help="the build context (default: this checkout)")
    build.add_argument("--json", type=Path, help="write what was built (tags, ids, sizes, seconds) here")
    commands.add_parser("sizes", help="the sizes of the images tagged with the package version")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.command == "sizes":
            env = podman_env(settings)
            version = package_version(ROOT)
            for ref in (
                PYTHON_BASE,
                AIRFLOW_BASE,
                f"{REGISTRY}/onboarding:{version}",
                f"{REGISTRY}/onboarding-airflow:{version}",
            ):
                _, size = inspect(ref, env)
                print(f"{ref}\t{size / 1e6:.0f} MB")
            return 0
        started = time.monotonic()
        built = build_all(settings, args.context.resolve())
        total = time.monotonic() - started
        print(f"done in {total:.0f} s")
        for image in built:
            print(f"  {image.name:20} {image.size_bytes / 1e6:6.0f} MB  {image.tag}")
        if args.json:
            args.json.write_text(json.dumps({"seconds": round(total, 1), "images": [asdict(b) for b in built]}))
        return 0
    except BuildError as err:
        print(f"scripts/images.py: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
