"""The one version check (airflow_adapter/versions.py): each adjustment of Airflow installs on
a release it was proven on and refuses, with a warning naming the release and its switch and
with Airflow left as it is, on any other. (sqlite_now's refusal changes the SQL of a whole
process: tests/unit/test_sqlite_now.py shows it in a fresh interpreter.)"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import jsonschema
import pytest

from airflow_adapter import action_log_thread, execution_api_warmup, schema_checks, sqlite_now, versions
from airflow_adapter.import_hooks import _AfterImport

UNPROVEN = "3.4.0"


def test_the_installed_airflow_is_one_every_adjustment_was_proven_on() -> None:
    """An Airflow upgrade without proving the adjustments on it switches them all off
    (safe, but slower): this fails first, and says what to do."""
    installed = versions.airflow_version()
    unproven = [name for name, a in versions.ADJUSTMENTS.items() if installed not in a.proven_on]
    assert not unproven, f"Airflow {installed}: run these adjustments' tests and add the release: {unproven}"
    assert set(versions.ADJUSTMENTS) == {
        m.__name__ for m in (schema_checks, execution_api_warmup, action_log_thread, sqlite_now)
    }


def _refused(caplog: pytest.LogCaptureFixture, install: Callable[..., bool], switch: str) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_adapter.versions"):
        assert install(airflow=UNPROVEN) is False
    assert f"this is Airflow {UNPROVEN}" in caplog.text
    assert f"{switch}=false" in caplog.text
    assert "proven on Airflow 3.3.2" in caplog.text


@pytest.fixture
def clean_schema_checks() -> Iterator[None]:
    schema_checks.uninstall()
    yield
    schema_checks.uninstall()


def test_schema_checks_install_only_on_a_proven_airflow(clean_schema_checks: None, caplog) -> None:
    original = jsonschema.validate
    _refused(caplog, schema_checks.install, "ONBOARDING_MEMOIZE_PARAM_SCHEMAS")
    assert jsonschema.validate is original
    assert schema_checks.install(airflow="3.3.2")
    assert jsonschema.validate is schema_checks.validate


@pytest.fixture(params=[execution_api_warmup, action_log_thread], ids=lambda m: m.__name__)
def api_server_adjustment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """An adjustment of an api-server module, with that module imported (here, not in the
    test: importing it configures Airflow's logging, which replaces the log capture's handler)."""
    adjustment: ModuleType = request.param
    with warnings.catch_warnings():
        # Airflow's import of starlette's test client warns about httpx (Airflow's, not ours).
        warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
        target = importlib.import_module(adjustment.TARGET)
    monkeypatch.setattr(target, adjustment.FACTORY, getattr(target, adjustment.FACTORY))  # put back after
    return adjustment


def test_api_server_adjustments_install_only_on_a_proven_airflow(api_server_adjustment: ModuleType, caplog) -> None:
    adjustment = api_server_adjustment
    target = sys.modules[adjustment.TARGET]
    factory = getattr(target, adjustment.FACTORY)
    hooks_before = list(sys.meta_path)

    _refused(caplog, adjustment.install, adjustment.ENV_VAR)
    assert getattr(target, adjustment.FACTORY) is factory
    assert sys.meta_path == hooks_before  # not even waiting for the module

    assert adjustment.install(airflow="3.3.2")
    assert getattr(target, adjustment.FACTORY) is not factory


@pytest.mark.parametrize("adjustment", [execution_api_warmup, action_log_thread], ids=lambda m: m.__name__)
def test_an_unproven_airflow_registers_no_import_hook_either(adjustment: ModuleType, monkeypatch) -> None:
    """Before the api-server's module is imported, a refused adjustment leaves nothing waiting for it."""
    monkeypatch.delitem(sys.modules, adjustment.TARGET, raising=False)
    assert adjustment.install(airflow=UNPROVEN) is False
    assert not [f for f in sys.meta_path if isinstance(f, _AfterImport) and f.name == adjustment.TARGET]


def test_sqlite_now_is_refused_on_an_unproven_airflow(caplog) -> None:
    if sqlite_now._installed:
        pytest.skip("installed in this process already (process-wide); the fresh-interpreter test covers it")
    _refused(caplog, sqlite_now.install, "ONBOARDING_SQLITE_NOW_MS")
    assert sqlite_now._installed is False
