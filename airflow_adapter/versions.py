"""The one version check: which Airflow releases each adjustment of Airflow was proven on.

An adjustment (the realtime instance's changes to Airflow's own behaviour, switched on in
`airflow_adapter.local_settings`) relies on Airflow internals that a release may change
without notice. Each is proven by its test in tests/unit (it runs Airflow's real code paths
and fails when the adjustment becomes wrong or useless). On any other Airflow release the
adjustment refuses to install: it logs a warning naming the release and its switch and
leaves Airflow as it is (slower, not broken). An Airflow upgrade is then one change here:
run the adjustments' tests on the new release and add it to `proven_on`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adjustment:
    """One adjustment of Airflow: what it does, the switch that turns it off, and the
    Airflow releases its test passed on."""

    what: str
    switch: str
    proven_on: tuple[str, ...]
    test: str


ADJUSTMENTS: dict[str, Adjustment] = {
    "airflow_adapter.schema_checks": Adjustment(
        "the Param schema-check cache",
        "ONBOARDING_MEMOIZE_PARAM_SCHEMAS",
        ("3.3.2",),
        "tests/unit/test_schema_checks.py",
    ),
    "airflow_adapter.execution_api_warmup": Adjustment(
        "the execution API warm-up",
        "ONBOARDING_WARM_EXECUTION_API",
        ("3.3.2",),
        "tests/unit/test_execution_api_warmup.py",
    ),
    "airflow_adapter.action_log_thread": Adjustment(
        "the audit-log commit in a thread",
        "ONBOARDING_ACTION_LOG_IN_THREAD",
        ("3.3.2",),
        "tests/unit/test_action_log_thread.py",
    ),
    "airflow_adapter.sqlite_now": Adjustment(
        "the SQLite now() to the millisecond",
        "ONBOARDING_SQLITE_NOW_MS",
        ("3.3.2",),
        "tests/unit/test_sqlite_now.py",
    ),
}


@cache
def airflow_version() -> str:
    """The installed Airflow release (from its distribution metadata: importing `airflow`
    here would initialise it from inside its own local settings)."""
    try:
        return version("apache-airflow")
    except PackageNotFoundError:
        return "none"


def proven(name: str, airflow: str | None = None) -> bool:
    """Whether the adjustment `name` (its module's name) was proven on `airflow` (default:
    the installed release). If not, log why it is not installed and how to switch it off."""
    adjustment = ADJUSTMENTS[name]
    release = airflow if airflow is not None else airflow_version()
    if release in adjustment.proven_on:
        return True
    logger.warning(
        "airflow_adapter: %s is not installed: it was proven on Airflow %s, this is Airflow %s; "
        "Airflow is left as it is. Set %s=false to run without it, or run %s on Airflow %s and add "
        "the release to airflow_adapter/versions.py.",
        adjustment.what,
        ", ".join(adjustment.proven_on),
        release,
        adjustment.switch,
        adjustment.test,
        release,
    )
    return False
