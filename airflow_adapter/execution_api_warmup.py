"""Build the execution API's versioned routes when an api-server worker starts, not on its
first request.

Task processes talk to Airflow through the api-server's execution API (`/execution`), a
Cadwyn app. Cadwyn (7.0, in Airflow 3.3.2) generates the routes of every API version on the
first request that reaches the app (`Cadwyn.__call__` -> `_cadwyn_initialize`): seconds of
CPU inside the worker's event loop. Measured on the local stack (2 cores): the first task
start (`PATCH /execution/task-instances/{id}/run`) took 8.6-9.1 s in each of the two
workers, and nothing else, the listener's triggers included, was answered meanwhile: the
first signups after a start or a restart waited 8-10 s for their task (docs/benchmarks.md).

`install()` wraps `airflow.api_fastapi.execution_api.app.create_task_execution_api_app` so
that the app it returns is initialised right away. uvicorn builds the app before a worker
accepts connections, so the work moves from the first request to the worker's start, before
the api-server answers its health check: "up" now means warm. The wrap is put in place when
that module is first imported (airflow_adapter/import_hooks.py, so no process imports the
api-server's code early) and only if the module and Cadwyn's initialiser are what this was written for;
otherwise it logs why and leaves Airflow as it is (slower, not broken).

`airflow_adapter.local_settings` installs it in every process of the realtime instance
(on a release listed in airflow_adapter/versions.py) unless ONBOARDING_WARM_EXECUTION_API
is false. tests/unit/test_execution_api_warmup.py fails when an upgrade of Airflow or Cadwyn makes it wrong or useless;
`python benchmarks/coldstart.py --compare ONBOARDING_WARM_EXECUTION_API=false` measures it.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

from airflow_adapter.import_hooks import wrap_when_imported
from airflow_adapter.versions import ADJUSTMENTS, proven

ENV_VAR = ADJUSTMENTS[__name__].switch  # ONBOARDING_WARM_EXECUTION_API
TARGET = "airflow.api_fastapi.execution_api.app"
FACTORY = "create_task_execution_api_app"
logger = logging.getLogger(__name__)


def initialised(app: Any) -> bool:
    """Whether a Cadwyn app has generated its versioned routes."""
    return bool(getattr(app, "_cadwyn_initialized", False))


def warm(app: Any) -> bool:
    """Generate the app's versioned routes now. False (and a warning) if it is not the Cadwyn
    app this was written for."""
    initialise = getattr(app, "_cadwyn_initialize", None)
    if not callable(initialise) or not hasattr(app, "_cadwyn_initialized"):
        logger.warning("the execution API app is not a Cadwyn 7 app (%s); not warmed", type(app).__name__)
        return False
    if not initialised(app):
        initialise()
    return initialised(app)


def wrap(module: ModuleType) -> bool:
    """Make the module's app factory return a warmed app. Idempotent."""
    factory = getattr(module, FACTORY, None)
    if not callable(factory):
        logger.warning("%s has no %s(); the execution API is not warmed at start", TARGET, FACTORY)
        return False
    if getattr(factory, "__onboarding_warmed__", False):
        return True

    @functools.wraps(factory)
    def create_warmed(*args: Any, **kwargs: Any) -> Any:
        app = factory(*args, **kwargs)
        warm(app)
        return app

    vars(create_warmed)["__onboarding_warmed__"] = True
    setattr(module, FACTORY, create_warmed)
    return True


def install(airflow: str | None = None) -> bool:
    """Wrap the app factory now if its module is loaded, else as soon as it is imported.
    False, and nothing changed, on an Airflow release it was not proven on."""
    if not proven(__name__, airflow):
        return False
    return wrap_when_imported(TARGET, wrap)
