"""Which Redis releases are safe to hold the service's data (docs/security.md, issue 28).

Redis 7.4.6 (and 8.0.4, 8.2.2) fixed four Lua engine CVEs: CVE-2025-49844 (use-after-free
in the Lua parser: code execution by any user allowed to run a script), CVE-2025-46817
(integer overflow in `unpack`), CVE-2025-46818 (a script running code in another user's
context through metatables) and CVE-2025-46819 (out-of-bounds read). Production pins
`redis:7.4.6` or later (deploy/k8s/redis.yaml, tests/deploy/test_redis_version.py); the
local stack takes whatever Redis answers (Debian 12 ships 7.0.15) and says loudly when it
is one of the vulnerable releases: fine for a laptop demo, never for production data.
"""

from __future__ import annotations

import re

MINIMUM = (7, 4, 6)
# Lines newer than 7.4 that were released before the fixes: the first fixed patch of each.
FIXED_IN_LINE: dict[tuple[int, int], int] = {(8, 0): 4, (8, 2): 2}
CVES = ("CVE-2025-49844", "CVE-2025-46817", "CVE-2025-46818", "CVE-2025-46819")

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")

Version = tuple[int, int, int]


def parse(text: str) -> Version:
    """`7.4.6`, `redis:7.4.6-alpine`, `v=7.0.15` -> (7, 4, 6); ValueError when none is found."""
    match = _VERSION.search(text)
    if match is None:
        raise ValueError(f"no Redis version (major.minor.patch) in {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def is_fixed(version: Version) -> bool:
    """Whether this release has the Lua CVE fixes: 7.4.6 or later, on 8.0 from 8.0.4, on 8.2
    from 8.2.2 (older lines, 7.2 and 6.2, are below the project's minimum either way)."""
    if version < MINIMUM:
        return False
    first_fixed = FIXED_IN_LINE.get(version[:2])
    return first_fixed is None or version[2] >= first_fixed


def warning(version: Version) -> str | None:
    """One loud line for a vulnerable release, None for a fixed one."""
    if is_fixed(version):
        return None
    shown = ".".join(map(str, version))
    wanted = ".".join(map(str, MINIMUM))
    return (
        f"WARNING: Redis {shown} is below {wanted} and has the Lua CVEs {', '.join(CVES)}: "
        "a laptop demo only, it must not hold production data (production pins redis:7.4.6+)"
    )
