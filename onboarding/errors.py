"""The one exception root of the project, and the errors every component shares.

OnboardingError                 catch this to catch anything the project raises on purpose
 ├── ConfigError                an environment variable has a value that cannot be used
 ├── InvalidEvent               a signup event breaks its contract (the reason says how)
 ├── AirflowError               a call to an Airflow instance's REST API failed
 │    ├── AirflowUnavailable    refused, timed out, 5xx, auth or DAG not ready: retry later
 │    └── AirflowRejected       Airflow refused this input (400/422): retrying cannot help
 ├── RedisFull                  Redis refused a write at its `maxmemory` (OOM): retry later
 ├── listener.ListenerError     the signup listener
 ├── risk.RiskError             the model, its artifacts and the pipeline steps
 ├── archiver.ArchiveError      the metadata archive
 ├── ops.OpsError               the operator tools (erase, access set-up, Redis ACLs)
 └── stack.StackError           the local runner

Each package's base derives from `OnboardingError`, so a CLI's `except OnboardingError`
reports any of them as a clear message instead of a traceback.
"""

from __future__ import annotations


class OnboardingError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(OnboardingError):
    """A setting is invalid; the message names the variable and its value."""


class InvalidEvent(OnboardingError):
    """A signup event was rejected. `reason` is a short code, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class AirflowError(OnboardingError):
    """A call to an Airflow REST API failed. `kind` is a short code for metrics and logs."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class AirflowUnavailable(AirflowError):
    """The call may succeed later (the listener keeps the entry pending and retries)."""


class AirflowRejected(AirflowError):
    """Airflow rejected the input; the listener dead-letters the event."""


class RedisFull(OnboardingError):
    """Redis refused a write because it reached its `maxmemory` (policy noeviction: writes are
    refused, nothing is evicted). Nothing was accepted; the same call may succeed once the
    listeners and trimming freed memory."""
