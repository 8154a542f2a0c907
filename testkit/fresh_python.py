"""Run a test's script in a fresh interpreter, as one process of an Airflow instance would start.

The realtime instance's adjustments (deploy/realtime/airflow_local_settings.py) change
modules process-wide, and some only matter when Airflow imports its modules in a given
order; the tests that show them therefore run a script in a new interpreter with the
checkout importable, an AIRFLOW_HOME of their own and the secret the api-server needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_script(
    script: str, home: Path, *args: str, unset: Iterable[str] = (), env: dict[str, str] | None = None
) -> Any:
    """Run `script` with `args` in `home` (also its AIRFLOW_HOME), without the `unset`
    variables and with `env` on top; it must exit 0 and print JSON as its last line, which
    is returned."""
    environ = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API_AUTH__JWT_SECRET": "a-test-secret-of-at-least-32-bytes-long",
        "PYTHONPATH": str(ROOT),
    }
    for key in unset:
        environ.pop(key, None)
    environ.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=environ,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
