"""The production Redis set-up of deploy/k8s/redis.yaml, run for real: a redis-server with
the ConfigMap's redis.conf and the ACL file its init container renders
(`onboarding-redis-acl render --server --output ...` from one password file per role), and a
replica started as the replica StatefulSet starts it. The default user is off, each role
logs in with its own password, the probe user can PING and nothing else, the replica
replicates as the `replica` user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from ops.redis_acl import SERVER_ROLES, roles
from testkit.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def connect(port: int, username: str | None = None, password: str | None = None) -> redis.Redis:
    """No retries: redis-py retries a refused AUTH (a ConnectionError) with back-off."""
    return redis.Redis(port=port, username=username, password=password, retry=Retry(NoBackoff(), 0))


def _manifest_conf() -> str:
    for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "redis.yaml").read_text()):
        if doc and doc["kind"] == "ConfigMap":
            return doc["data"]["redis.conf"]
    raise AssertionError("no redis ConfigMap")


def _server_conf(tmp: Path, port: int) -> Path:
    """The ConfigMap's redis.conf with this machine's paths and port."""
    conf = _manifest_conf()
    conf = re.sub(r"^dir .*$", f"dir {tmp}", conf, flags=re.MULTILINE)
    conf = re.sub(r"^aclfile .*$", f"aclfile {tmp / 'users.acl'}", conf, flags=re.MULTILINE)
    path = tmp / "redis.conf"
    path.write_text(conf + f'\nport {port}\nbind 127.0.0.1\nprotected-mode no\nsave ""\n')
    return path


def _render(tmp: Path, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What the init container runs, with the Secret's keys as files."""
    secrets_dir = tmp / "secrets"
    secrets_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin"}
    for role in [*roles(), *SERVER_ROLES]:
        (secrets_dir / role.name).write_text(passwords[role.name])
        env[f"REDIS_ACL_PASSWORD_{role.name.upper()}_FILE"] = str(secrets_dir / role.name)
    output = tmp / "users.acl"
    return subprocess.run(
        [sys.executable, "-m", "ops.redis_acl", "render", "--server", "--output", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            connect(port).ping()
        except (AuthenticationError, ResponseError):
            return process  # it answers (NOAUTH: the default user is off)
        except redis.ConnectionError:
            time.sleep(0.1)
            continue
        return process
    process.kill()
    raise AssertionError(f"redis-server on port {port} did not start")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[int, int, dict[str, str]]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    passwords = {role.name: f"{role.name}-pw-{time.time_ns()}" for role in [*roles(), *SERVER_ROLES]}
    primary_dir, replica_dir = tmp_path / "primary", tmp_path / "replica"
    primary_dir.mkdir()
    replica_dir.mkdir()
    rendered = _render(primary_dir, passwords)
    assert rendered.returncode == 0, rendered.stderr
    assert f"{len(passwords)} users enabled" in rendered.stdout
    assert (primary_dir / "users.acl").stat().st_mode & 0o077 == 0
    shutil.copy(primary_dir / "users.acl", replica_dir / "users.acl")
    primary_port, replica_port = free_port(), free_port()
    primary = _start(["redis-server", str(_server_conf(primary_dir, primary_port))], primary_port)
    # As the replica StatefulSet's command: --masterauth with the replica user's password.
    replica = _start(
        [
            "redis-server",
            str(_server_conf(replica_dir, replica_port)),
            "--masterauth",
            passwords["replica"],
            "--replicaof",
            "127.0.0.1",
            str(primary_port),
        ],
        replica_port,
    )
    try:
        yield primary_port, replica_port, passwords
    finally:
        for process in (primary, replica):
            process.terminate()
            process.wait(timeout=20)


def test_the_default_user_is_off_and_every_role_logs_in_with_its_own_password(servers) -> None:
    port, _replica_port, passwords = servers
    with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)noauth|authentication|authenticated"):
        connect(port).get("signups")
    with pytest.raises(AuthenticationError):
        connect(port, "default", "").ping()
    for name, password in passwords.items():
        client = connect(port, name, password)
        assert client.ping() is True, name
        with pytest.raises(AuthenticationError):
            connect(port, name, password + "x").ping()
    probe = connect(port, "probe", passwords["probe"])
    for call in (lambda: probe.get("signups"), lambda: probe.keys("*"), lambda: probe.config_get("*")):
        with pytest.raises(NoPermissionError):
            call()
    admin = connect(port, "admin", passwords["admin"])
    users = {line.split()[1] for line in admin.acl_list()}
    assert {role.name for role in [*roles(), *SERVER_ROLES]} | {"default"} == users


def test_the_replica_replicates_as_the_replica_user(servers) -> None:
    port, replica_port, passwords = servers
    admin = connect(port, "admin", passwords["admin"])
    admin.xadd("signups", {"payload": "{}"})
    replica_admin = connect(replica_port, "admin", passwords["admin"])
    deadline = time.monotonic() + 20
    while replica_admin.info("replication").get("master_link_status") != "up" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica_admin.info("replication")["master_link_status"] == "up"
    while replica_admin.xlen("signups") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replica_admin.xlen("signups") == 1
    # The replication user cannot read or write data directly.
    replica_user = connect(port, "replica", passwords["replica"])
    with pytest.raises(NoPermissionError):
        replica_user.xrange("signups")
