"""The api-server's audit-log write, done in a worker thread instead of on the event loop.

Airflow's REST API records every write request in its `log` table (the audit log) through
a FastAPI dependency, `airflow.api_fastapi.logging.decorators.action_logging`. In Airflow
3.3.2 that dependency is an `async` function that calls the blocking `session.commit()`
on the event loop. The endpoints themselves are plain functions that FastAPI runs in its
thread pool, and their session commits only when the request's session dependency is torn
down, which the event loop has to schedule.

On SQLite, the default metadata database of the local stack, a write takes the database's
single write lock from the first flush to the commit. So when one request's endpoint has
written (a triggered run's rows) and waits for the event loop to commit, and another
request's audit-log commit waits on the event loop for that lock, neither can go on until
SQLite's busy timeout (5 s) fails the audit-log commit: "database is locked", a 500 for that
request, and every other request of that api-server worker stalled for those 5 s. Under a
burst of signups on SQLite the api-server log showed 90 requests taking 5-15 s this way
(docs/benchmarks.md). PostgreSQL locks rows, so the two never meet there.

`install()` wraps `action_logging` so that the dependency it returns does the same work
with the commit moved to a worker thread (awaited, so the audit row is still committed
before the endpoint runs, as before). The event loop keeps serving while it waits; the
lock holder's commit gets its turn. It is put in place when that module is first imported
(airflow_adapter/import_hooks.py), so no process imports the api-server's code early, and only
if the dependency looks as this was written for; otherwise it logs why and leaves Airflow
as it is.

`airflow_adapter.local_settings` installs it in every process of the realtime instance
(on a release listed in airflow_adapter/versions.py) unless ONBOARDING_ACTION_LOG_IN_THREAD
is false. tests/unit/test_action_log_thread.py fails when Airflow's dependency changes shape
or the commit is back on the loop.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from airflow_adapter.import_hooks import wrap_when_imported
from airflow_adapter.versions import ADJUSTMENTS, proven

ENV_VAR = ADJUSTMENTS[__name__].switch  # ONBOARDING_ACTION_LOG_IN_THREAD
TARGET = "airflow.api_fastapi.logging.decorators"
FACTORY = "action_logging"
MARK = "__onboarding_commit_in_thread__"
logger = logging.getLogger(__name__)


class _CommitLater:
    """The request's session, with `commit()` counted instead of run."""

    def __init__(self, session: Any) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "commits", 0)

    def commit(self) -> None:
        object.__setattr__(self, "commits", self.commits + 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._session, name, value)


def commit_in_thread(log_action: Callable[..., Any]) -> Callable[..., Any] | None:
    """An async dependency like `log_action`, whose session commit runs in a worker thread.
    None if `log_action` is not an async function taking the session as `session`."""
    if not inspect.iscoroutinefunction(log_action):
        return None
    try:
        signature = inspect.signature(log_action, eval_str=True)
    except (NameError, TypeError, ValueError):
        return None
    if "session" not in signature.parameters:
        return None
    from starlette.concurrency import run_in_threadpool

    @functools.wraps(log_action)
    async def log_action_commit_in_thread(*args: Any, **kwargs: Any) -> Any:
        session = kwargs.get("session")
        if session is None:  # FastAPI passes dependencies by keyword; anything else is left alone
            return await log_action(*args, **kwargs)
        deferred = _CommitLater(session)
        result = await log_action(*args, **{**kwargs, "session": deferred})
        for _ in range(deferred.commits):
            await run_in_threadpool(session.commit)
        return result

    # FastAPI reads the dependency's parameters from its signature: the original's, with
    # its string annotations resolved in the original's module.
    vars(log_action_commit_in_thread)["__signature__"] = signature
    return log_action_commit_in_thread


def wrap(module: ModuleType) -> bool:
    """Make the module's `action_logging` return dependencies that commit in a thread. Idempotent."""
    factory = getattr(module, FACTORY, None)
    if not callable(factory):
        logger.warning("%s has no %s(); the audit log is written on the event loop", TARGET, FACTORY)
        return False
    if getattr(factory, MARK, False):
        return True
    probe = commit_in_thread(factory())
    if probe is None:
        logger.warning(
            "%s.%s() no longer returns an async dependency taking `session`; the audit log is left as it is",
            TARGET,
            FACTORY,
        )
        return False

    @functools.wraps(factory)
    def action_logging(*args: Any, **kwargs: Any) -> Any:
        log_action = factory(*args, **kwargs)
        return commit_in_thread(log_action) or log_action

    vars(action_logging)[MARK] = True
    setattr(module, FACTORY, action_logging)
    return True


def install(airflow: str | None = None) -> bool:
    """Wrap `action_logging` now if its module is loaded, else as soon as it is imported.
    Routes take the dependency when their module is imported, so this must run before the
    api-server's routes are imported: Airflow imports the local settings long before.
    False, and nothing changed, on an Airflow release it was not proven on."""
    if not proven(__name__, airflow):
        return False
    return wrap_when_imported(TARGET, wrap)
