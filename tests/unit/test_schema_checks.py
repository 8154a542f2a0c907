"""The Param schema-check cache: checked once per schema on Airflow's real paths, nothing else changes.

These run Airflow's own Param code (the API server's trigger validation and the task
process's `process_params`) on the onboarding DAG's real Params, so an upgrade of Airflow or
jsonschema that moves the seam, or changes the function it mirrors, fails here.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import pytest
from jsonschema import validators

from airflow_adapter import schema_checks
from airflow_adapter.local_settings import forks_task_processes
from onboarding.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "realtime" / "onboarding_dag.py"
LOCAL_SETTINGS = ROOT / "deploy" / "realtime" / "airflow_local_settings.py"
CALLS = 5


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.fixture(autouse=True)
def _uninstalled_after() -> Iterator[None]:
    schema_checks.uninstall()
    yield
    schema_checks.uninstall()


@pytest.fixture(scope="module")
def dag() -> Any:
    return _load(DAG_FILE, "onboarding_dag_schema_checks_under_test").onboarding()


@pytest.fixture(scope="module")
def server_dag(dag: Any) -> Any:
    """The DAG as the API server holds it: deserialized from the serialized DAG."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def conf(**changes: Any) -> dict[str, Any]:
    """A trigger's conf as the listener sends it: a real applicant, `changes` applied."""
    from risk.model import load_training_data

    return {
        "schema_version": 1,
        "event_id": "evt-schema-checks-1",
        "user_id": "user-schema-checks",
        "occurred_at": "2026-11-30T00:00:00.000Z",
        "application": {**load_training_data().applications[7], **changes},
        "accepted_at": "2026-11-30T00:00:00.100Z",
    }


def trigger(server_dag: Any, run_conf: dict[str, Any]) -> dict[str, Any]:
    """The API server's trigger: `SerializedDAG.create_dagrun`, stopped before it writes the run."""
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    with mock.patch("airflow.serialization.definitions.dag._create_orm_dagrun") as write_run:
        server_dag.create_dagrun(
            run_id="manual__schema-checks",
            run_after=datetime(2026, 11, 30, tzinfo=UTC),
            conf=run_conf,
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.REST_API,
            state=DagRunState.QUEUED,
            session=mock.Mock(),
        )
    return write_run.call_args.kwargs["conf"]


def task_params(dag: Any, run_conf: dict[str, Any]) -> dict[str, Any]:
    """What each task process does with its run's conf before the task runs."""
    from airflow.sdk.definitions.param import process_params

    return process_params(dag, dag.tasks[0], run_conf, suppress_exception=False)


def distinct_schemas(server_dag: Any) -> int:
    return len({json.dumps(param.schema, sort_keys=True) for _, param in server_dag.params.items()})


def metaschema_checks(call: Callable[[], Any], times: int) -> list[int]:
    """How many times each of `times` calls checked a schema against the metaschema."""
    cls = validators.validator_for({})  # what Airflow's Params (no "$schema") are validated with
    counts = []
    with mock.patch.object(cls, "check_schema", wraps=cls.check_schema) as check_schema:
        for _ in range(times):
            before = check_schema.call_count
            call()
            counts.append(check_schema.call_count - before)
    return counts


@pytest.mark.parametrize("path", [trigger, task_params], ids=["api-server trigger", "task process"])
def test_airflow_checks_each_param_schema_once_instead_of_on_every_call(path, dag, server_dag) -> None:
    target = server_dag if path is trigger else dag
    expected = path(target, conf())

    off = metaschema_checks(lambda: path(target, conf()), CALLS)
    # If this fails, Airflow no longer re-checks schemas on every call (or no longer calls
    # jsonschema.validate): airflow_adapter/schema_checks.py has nothing left to do, remove it.
    assert off[0] > 0 and off == [off[0]] * CALLS, off

    assert schema_checks.install()
    on = metaschema_checks(lambda: path(target, conf()), CALLS)
    assert on == [distinct_schemas(server_dag)] + [0] * (CALLS - 1), on
    assert path(target, conf()) == expected


@pytest.mark.parametrize("path", [trigger, task_params], ids=["api-server trigger", "task process"])
def test_an_invalid_value_is_rejected_with_the_same_message(path, dag, server_dag) -> None:
    from airflow.exceptions import ParamValidationError as ServerError
    from airflow.sdk.exceptions import ParamValidationError as TaskError

    target = server_dag if path is trigger else dag
    bad = conf(housing="castle")
    with pytest.raises((ServerError, TaskError), match="castle") as off:
        path(target, bad)

    assert schema_checks.install()
    path(target, conf())  # the schemas are now remembered
    for _ in range(2):
        with pytest.raises(type(off.value)) as on:
            path(target, bad)
        assert str(on.value) == str(off.value)


def test_an_invalid_schema_fails_on_every_call() -> None:
    from airflow.exceptions import ParamValidationError
    from airflow.sdk import Param
    from airflow.serialization.definitions.param import SerializedParam, SerializedParamsDict

    assert schema_checks.install()
    sdk_param = Param(1, type="no-such-type")
    server_params = SerializedParamsDict({"n": SerializedParam(1, type="no-such-type")})
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            sdk_param.resolve()
        with pytest.raises(ParamValidationError, match="no-such-type"):
            server_params.validate()


def test_values_are_validated_exactly_as_jsonschema_does() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}, "s": {"enum": ["a", "b"]}},
        "required": ["n"],
        "additionalProperties": False,
    }
    cases = [{"n": 1, "s": "a"}, {"n": 0}, {"s": "c"}, {"n": "x", "extra": 1}, [], None]
    for value in cases:
        errors = []
        for validate in (validators.validate, schema_checks.validate):
            try:
                validate(value, schema, format_checker=jsonschema.FormatChecker())
                errors.append(None)
            except jsonschema.ValidationError as err:
                errors.append((err.message, list(err.absolute_path), err.validator))
        assert errors[0] == errors[1], value


def test_jsonschema_validate_is_still_the_function_mirrored() -> None:
    # airflow_adapter/schema_checks.validate copies this body, skipping check_schema for schemas
    # that passed it. If jsonschema changed it, re-read it and update the copy (and this).
    assert jsonschema.validate is validators.validate
    assert str(inspect.signature(validators.validate)) == "(instance, schema, cls=None, *args, **kwargs)"
    body = inspect.getsource(validators.validate).split('"""')[-1]
    assert [line.strip() for line in body.splitlines() if line.strip()] == [
        "if cls is None:",
        "cls = validator_for(schema)",
        "cls.check_schema(schema)",
        "validator = cls(schema, *args, **kwargs)",
        "error = exceptions.best_match(validator.iter_errors(instance))",
        "if error is not None:",
        "raise error",
    ]


def test_it_is_not_installed_over_another_replacement(monkeypatch, caplog) -> None:
    def other(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(jsonschema, "validate", other)
    with caplog.at_level(logging.WARNING, logger="airflow_adapter.schema_checks"):
        assert not schema_checks.install()
    assert jsonschema.validate is other
    assert "not memoized" in caplog.text


# deploy/realtime/airflow_local_settings.py (airflow_adapter.local_settings): what installs it,
# and where the warm-up runs.


def load_local_settings(monkeypatch: pytest.MonkeyPatch, setting: str | None = None) -> Any:
    monkeypatch.setattr(sys, "argv", ["pytest"])  # not a process that forks tasks: no warm-up
    if setting is None:
        monkeypatch.delenv(schema_checks.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(schema_checks.ENV_VAR, setting)
    return _load(LOCAL_SETTINGS, "realtime_local_settings_under_test")


def test_the_realtime_instance_installs_it_unless_switched_off(monkeypatch) -> None:
    module = load_local_settings(monkeypatch)
    assert schema_checks.installed()
    assert module.__all__ == []  # Airflow copies public names into airflow.settings
    schema_checks.uninstall()
    load_local_settings(monkeypatch, "false")
    assert not schema_checks.installed()
    with pytest.raises(ConfigError, match="ONBOARDING_MEMOIZE_PARAM_SCHEMAS"):
        load_local_settings(monkeypatch, "maybe")


@pytest.mark.parametrize(
    ("argv", "forks"),
    [
        (["/opt/airflow/.venv/bin/airflow", "scheduler"], True),
        (["-m", "scheduler"], True),  # `python -m airflow scheduler` while the package is imported
        (["/opt/airflow/.venv/lib/python3.11/site-packages/airflow/__main__.py", "scheduler"], True),
        (["airflow", "scheduler", "--num-runs", "10", "-D"], True),
        (["airflow", "celery", "worker", "--concurrency", "4", "--skip-serve-logs"], True),
        (["-m", "celery", "worker", "-q", "default"], True),
        (["airflow", "scheduler", "--help"], False),
        (["airflow", "api-server", "--port", "28080"], False),
        (["-m", "dag-processor"], False),
        (["airflow", "celery", "flower"], False),
        (["airflow", "tasks", "run", "onboarding", "decide", "manual__1"], False),
        (["airflow", "dags", "list"], False),
        (["/usr/bin/python", "-c", "import airflow"], False),
        ([], False),
    ],
)
def test_the_warm_up_runs_in_the_processes_that_fork_tasks(argv: list[str], forks: bool) -> None:
    assert forks_task_processes(argv) is forks
