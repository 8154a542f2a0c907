"""Event content reaches the onboarding DAG only as typed, validated Params, never as a template."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "realtime" / "onboarding_dag.py"


def _dag():
    spec = importlib.util.spec_from_file_location("onboarding_dag_params_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        return module.onboarding()
    finally:
        sys.modules.pop(spec.name, None)


def test_every_event_field_is_a_typed_param_and_no_task_templates_it() -> None:
    dag = _dag()
    for name in ("schema_version", "event_id", "user_id", "occurred_at", "application"):
        schema = dag.params.get_param(name).schema
        assert "type" in schema or "const" in schema, name
    assert dag.params.get_param("event_id").schema["pattern"].startswith("^[A-Za-z0-9]")
    assert dag.params.get_param("application").schema["additionalProperties"] is False
    assert dag.render_template_as_native_obj is False
    assert not dag.template_searchpath
    for task in dag.tasks:
        for field in task.template_fields:
            value = str(getattr(task, field, ""))
            assert "{{" not in value and "params" not in value and "dag_run" not in value, (task.task_id, field)


def test_the_app_param_takes_an_app_name_or_nothing() -> None:
    """The listener's `app` (docs/security.md C14): absent or null for a shared-stream signup,
    an app's name otherwise; anything else is refused by Airflow's param validation."""
    import pytest
    from airflow.sdk.definitions.param import ParamValidationError

    dag = _dag()
    assert dag.params.get_param("app").resolve() is None  # a conf without it
    for good in (None, "web", "m-1"):
        assert dag.params.get_param("app").resolve(good) == good
    for bad in ("Web", "web:x", "*", "", "x" * 33, 7):
        with pytest.raises(ParamValidationError):
            dag.params.get_param("app").resolve(bad)
