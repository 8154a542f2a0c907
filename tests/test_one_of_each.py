"""One of each, checked on the shipped source (docs/architecture.md, "One of each").

- Redis clients are made by `onboarding.redis_clients` only, so every client has timeouts.
- Retry delays come from `onboarding.backoff` only: no loop doubles a delay by hand.
- No shipped package names a test-only environment variable: fault hooks are injected by
  testkit, never switched on by production settings.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTORY = Path("onboarding/redis_clients.py")
BACKOFF = Path("onboarding/backoff.py")


def shipped_sources() -> Iterator[tuple[Path, ast.Module]]:
    """Every module of the wheel's packages (pyproject's package list) and the DAG files."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [p.rstrip("*").rstrip(".") for p in patterns["include"]]
    for top in [*packages, "dags"]:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), str(path))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def redis_constructions(tree: ast.Module) -> list[tuple[int, str]]:
    """Calls that make a Redis client: `Redis(...)`, `Redis.from_url(...)`, `StrictRedis...`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            parts = name.split(".")
            if parts[-1] in ("Redis", "StrictRedis") or (
                parts[-1] == "from_url" and len(parts) > 1 and parts[-2] in ("Redis", "StrictRedis")
            ):
                found.append((node.lineno, name))
    return found


def hand_doubled_delays(tree: ast.Module) -> list[tuple[int, str]]:
    """`delay * 2`, `backoff_s *= 2` and the like: a retry policy written by hand."""
    found = []

    def delayish(node: ast.AST) -> bool:
        return bool(re.search("delay|backoff", _dotted(node), re.IGNORECASE))

    def number(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, int | float) and node.value > 1

    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if (delayish(node.left) and number(node.right)) or (delayish(node.right) and number(node.left)):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult):
            if delayish(node.target) and number(node.value):
                found.append((node.lineno, ast.unparse(node)))
    return found


ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")


def named_test_switches(tree: ast.Module) -> list[tuple[int, str]]:
    """Strings shaped like an environment variable with a TEST part (`ARCHIVE_TEST_KILL_...`)."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ENV_NAME.fullmatch(node.value)
        and "TEST" in node.value.split("_")
    ]


def test_only_the_factory_makes_redis_clients() -> None:
    wrong = [
        f"{path}:{line} {call}(...)"
        for path, tree in shipped_sources()
        if path != FACTORY
        for line, call in redis_constructions(tree)
    ]
    assert not wrong, "make Redis clients with onboarding.redis_clients.connect/shared:\n" + "\n".join(wrong)


def test_the_scan_finds_a_raw_client() -> None:
    code = (
        "import redis\nfrom redis import Redis, StrictRedis\n"
        "a = redis.Redis.from_url(u)\nb = Redis(host='h')\nc = StrictRedis.from_url(u)\nd = redis.StrictRedis()\n"
    )
    assert [line for line, _ in redis_constructions(ast.parse(code))] == [3, 4, 5, 6]
    assert redis_constructions(ast.parse("connect(url, Role.CLI)\nshared(url)\nurl.from_url()")) == []


def test_no_loop_doubles_a_delay_by_hand() -> None:
    wrong = [
        f"{path}:{line} {expr}"
        for path, tree in shipped_sources()
        if path != BACKOFF
        for line, expr in hand_doubled_delays(tree)
    ]
    assert not wrong, "take retry delays from onboarding.backoff.Backoff:\n" + "\n".join(wrong)


def test_the_scan_finds_a_hand_written_backoff() -> None:
    code = "delay = min(delay * 2, cap)\nchild.backoff_s *= 2\nwait = 1.5 * retry_delay_s\nn = count * 2\n"
    assert sorted(line for line, _ in hand_doubled_delays(ast.parse(code))) == [1, 2, 3]


def test_no_shipped_package_names_a_test_environment_variable() -> None:
    """Such a name in shipped code is a switch a production deployment could flip by accident."""
    wrong = [f"{path}:{line} {name!r}" for path, tree in shipped_sources() for line, name in named_test_switches(tree)]
    assert not wrong, "inject test hooks from testkit instead of reading them from settings:\n" + "\n".join(wrong)


def test_the_scan_finds_a_test_switch() -> None:
    code = (
        'env.int("ARCHIVE_TEST_KILL_AFTER_COPIED_BATCHES", 0)\nos.environ.get("TEST_MODE")\n'
        'os.getenv("CONTENT_TYPE_LATEST")\nenv.str("LOG_FORMAT")\n'
    )
    assert named_test_switches(ast.parse(code)) == [
        (1, "ARCHIVE_TEST_KILL_AFTER_COPIED_BATCHES"),
        (2, "TEST_MODE"),
    ]
