"""The project's container images, built here (scripts/images.py) and run with podman.

`built_images()` installs the container tools when missing (scripts/setup.sh
`ensure_container_tools`), proves a container can run at all (else the test skips with
podman's exact error: the only reason to skip) and builds or reuses both images.
`Container` is one detached container on the host's network, removed after the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ONBOARDING_HOME") or ROOT / "var") / "images"
# Both images say HEALTHCHECK NONE (Kubernetes probes instead); podman 4.3 still tries to
# register a systemd timer for it and logs an error where systemd does not run.
NO_HEALTHCHECK = ("--no-healthcheck",)


def podman_env() -> dict[str, str]:
    """Every podman call gets the containers.conf scripts/images.py writes (runc, ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers.conf")}


def podman(*args: str, timeout_s: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


@dataclass(frozen=True)
class Images:
    """What `scripts/images.py build` reported: per image its tag, id, size and build time."""

    images: dict[str, dict[str, Any]]
    seconds: float

    @property
    def service(self) -> str:
        return str(self.images["onboarding"]["tag"])

    @property
    def airflow(self) -> str:
        return str(self.images["onboarding-airflow"]["tag"])


def built_images() -> Images:
    setup = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / 'setup.sh'} && ensure_container_tools"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert setup.returncode == 0, f"ensure_container_tools failed: {setup.stdout[-2000:]}{setup.stderr[-2000:]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "images.json"
        built = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "images.py"), "build", "--json", str(report)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        # The runtime probe after the build step wrote containers.conf: a container from the
        # host's own root filesystem (overlaid, so nothing of it changes) running `true`.
        probe = podman("run", "--rm", "--network=host", *NO_HEALTHCHECK, "--rootfs", "/:O", "/bin/true", check=False)
        if probe.returncode != 0:
            pytest.skip(f"no container can run on this machine: podman run: {probe.stderr.strip()}")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        found = json.loads(report.read_text())
    return Images({i["name"]: i for i in found["images"]}, found["seconds"])


class Container:
    """A detached container on the host's network (podman run -d), removed by `remove()`."""

    def __init__(self, name: str, image: str, argv: list[str], env: dict[str, str], *options: str) -> None:
        self.name = name
        env_file = CACHE / f"{name}.env"  # secrets stay off the command line (and ps)
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{key}={value}\n" for key, value in env.items())
        podman("rm", "-f", "--ignore", name)
        podman(
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            *NO_HEALTHCHECK,
            f"--env-file={env_file}",
            *options,
            image,
            *argv,
        )
        self.env_file = env_file

    def running(self) -> bool:
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def logs(self, lines: int = 60) -> str:
        return podman("logs", "--tail", str(lines), self.name, check=False).stdout

    def exec(self, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, timeout_s=timeout_s, check=False)

    def assert_running(self) -> None:
        assert self.running(), f"container {self.name} exited:\n{self.logs()}"

    def remove(self) -> None:
        podman("rm", "-f", "-t", "10", "--ignore", self.name, check=False)
        self.env_file.unlink(missing_ok=True)


def run_once(image: str, argv: list[str], env: dict[str, str], *options: str, timeout_s: float = 600) -> str:
    """Run a container to completion (podman run --rm); its output, or an AssertionError with it."""
    with tempfile.NamedTemporaryFile("w", dir=CACHE, suffix=".env") as env_file:
        env_file.writelines(f"{key}={value}\n" for key, value in env.items())
        env_file.flush()
        started = time.monotonic()
        result = podman(
            "run", "--rm", "--network=host", *NO_HEALTHCHECK, f"--env-file={env_file.name}", *options, image, *argv,
            timeout_s=timeout_s, check=False,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{argv} in {image} failed after {time.monotonic() - started:.0f} s:\n{output[-3000:]}"
    )
    return output


@dataclass(frozen=True)
class ManifestContainer:
    """One container of a deploy/k8s/ manifest, as podman runs it: its `args` (with
    `$(VAR)` expanded from `env`, as the kubelet does), literal `env` values, the pod's and
    container's security context as options (user, read-only root filesystem, dropped
    capabilities, no privilege escalation), its secret volumes (mount path -> (Secret,
    [(key, file)])) and other volumes (mount paths, given an empty tmpfs), and its probes."""

    args: list[str]
    env: dict[str, str]
    options: list[str]
    secrets: dict[str, tuple[str, list[tuple[str, str]]]]
    probes: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, manifest: Path, name: str) -> ManifestContainer:
        for doc in yaml.safe_load_all(manifest.read_text()):
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec")
            for container in (pod or {}).get("containers", []):
                if container["name"] == name:
                    return cls._of(pod, container)
        raise AssertionError(f"{manifest.name} has no container {name}")

    @classmethod
    def _of(cls, pod: dict[str, Any], container: dict[str, Any]) -> ManifestContainer:
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        options = [f"--user={context['runAsUser']}:{context.get('runAsGroup', 0)}"]
        if context.get("readOnlyRootFilesystem"):
            options.append("--read-only")
        if "ALL" in context.get("capabilities", {}).get("drop", []):
            options.append("--cap-drop=all")
        if context.get("allowPrivilegeEscalation") is False:
            options.append("--security-opt=no-new-privileges")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secrets: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                items = [(i["key"], i["path"]) for i in volume["secret"]["items"]]
                secrets[mount["mountPath"]] = (volume["secret"]["secretName"], items)
            else:  # a PersistentVolumeClaim or emptyDir: an empty volume here
                options.append(f"--tmpfs={mount['mountPath']}:rw,mode=1777")
        env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
        probes = {k: v for k, v in container.items() if k.endswith("Probe")}
        return cls(container["args"], env, options, secrets, probes)

    def argv(self, env: dict[str, str]) -> list[str]:
        return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg) for arg in self.args]

    def secret_mounts(self, values: dict[tuple[str, str], str], where: Path) -> list[str]:
        """`-v` options mounting each secret volume's files, from values[(Secret, key)]."""
        options = []
        for mount_path, (secret, items) in self.secrets.items():
            directory = where / secret
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
            for key, file in items:
                (directory / file).write_text(values[(secret, key)])
                (directory / file).chmod(0o644)  # the kubelet: defaultMode 0440 and the pod's fsGroup
            options += ["-v", f"{directory}:{mount_path}:ro"]
        return options
