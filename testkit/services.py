"""Real services or a loud failure in CI, and free ports for the processes a test starts.

Like dramatiq's suite: a service that is down skips its tests on a laptop but fails them
when CI is set, so a green CI run always means the real thing was exercised.
"""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = bool(os.environ.get("CI"))


def require(available: bool, what: str) -> None:
    """Go on if `what` is available; otherwise skip the test, or fail it in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
