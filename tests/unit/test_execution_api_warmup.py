"""The realtime api-server's execution API is warm when a worker starts (airflow_adapter/execution_api_warmup.py).

Each case builds the api-server's app the way a uvicorn worker does (`create_app`), in a fresh
interpreter that loads deploy/realtime/airflow_local_settings.py first, as Airflow does in
every process of the realtime instance. They fail when an upgrade of Airflow or Cadwyn makes
the warm-up wrong (the app is not warm) or useless (Cadwyn no longer waits for the first
request), so it can be dropped then.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from airflow_adapter import execution_api_warmup
from testkit.fresh_python import run_script

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SETTINGS = ROOT / "deploy" / "realtime" / "airflow_local_settings.py"

BUILD_LIKE_A_WORKER = f"""
import json, runpy, time
runpy.run_path({str(LOCAL_SETTINGS)!r})  # what airflow.settings does with the instance's copy
from airflow.api_fastapi.app import create_app
from fastapi.testclient import TestClient
from airflow_adapter.execution_api_warmup import initialised

started = time.perf_counter()
app = create_app(apps="execution")
built_s = time.perf_counter() - started
execution = next(route.app for route in app.routes if getattr(route, "path", "") == "/execution")
warm_at_start = initialised(execution)
started = time.perf_counter()
with TestClient(app) as client:  # runs the app's lifespan, as uvicorn does
    status = client.get("/execution/health").status_code
print(json.dumps({{"warm_at_start": warm_at_start, "first_request_s": time.perf_counter() - started,
                   "built_s": built_s, "status": status}}))
"""


def build_like_a_worker(tmp_path: Path, **env: str) -> dict[str, object]:
    return run_script(BUILD_LIKE_A_WORKER, tmp_path, unset=[execution_api_warmup.ENV_VAR], env=env)


def test_an_api_server_worker_builds_the_execution_api_before_its_first_request(tmp_path: Path) -> None:
    warmed = build_like_a_worker(tmp_path)
    assert warmed["warm_at_start"] is True
    assert warmed["status"] == 200


def test_without_it_the_first_request_builds_them_so_the_warm_up_is_still_needed(tmp_path: Path) -> None:
    cold = build_like_a_worker(tmp_path, ONBOARDING_WARM_EXECUTION_API="false")
    assert cold["warm_at_start"] is False
    assert cold["status"] == 200


def test_an_app_it_was_not_written_for_is_left_alone(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listen on the module's own logger: a logging configuration loaded by an earlier test
    # (Airflow's, in the same process) may stop its records reaching the root logger.
    logger = execution_api_warmup.logger
    monkeypatch.setattr(logger, "disabled", False)
    caplog.set_level(logging.WARNING, logger=logger.name)
    logger.addHandler(caplog.handler)
    try:
        assert execution_api_warmup.warm(object()) is False
    finally:
        logger.removeHandler(caplog.handler)
    assert "not a Cadwyn 7 app" in caplog.text
