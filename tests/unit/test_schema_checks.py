"""The schema-check cache changes how often a schema is checked, never what is accepted."""

from __future__ import annotations

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from onboarding import schema_checks
from onboarding.schema import signup_schema


@pytest.fixture
def installed():
    schema_checks.memoize_schema_checks()
    yield
    schema_checks.restore()


def application_schema() -> dict:
    return signup_schema(1)["properties"]["application"]


def test_values_are_still_validated_in_full(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    from onboarding.publisher import sample_application

    schema = application_schema()
    good = sample_application()
    for _ in range(3):
        jsonschema.validate(good, schema)
    bad = {**good, "housing": "castle"}
    with pytest.raises(jsonschema.ValidationError, match="castle"):
        jsonschema.validate(bad, schema)


def test_the_schema_is_checked_once_then_remembered(installed, monkeypatch: pytest.MonkeyPatch) -> None:
    from onboarding.publisher import sample_application

    checks = []
    original = Draft202012Validator.check_schema.__func__
    monkeypatch.setattr(
        Draft202012Validator, "check_schema", classmethod(lambda cls, s: (checks.append(1), original(cls, s)))
    )
    schema = {**application_schema(), "$schema": "https://json-schema.org/draft/2020-12/schema"}
    for _ in range(5):
        jsonschema.validate(sample_application(), schema)
    assert len(checks) == 1


def test_a_bad_schema_fails_every_time(installed) -> None:
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            jsonschema.validate(1, {"type": "no-such-type"})


def test_airflow_param_validation_uses_it(installed) -> None:
    from airflow.sdk import Param

    param = Param(None, type="object", properties={"n": {"type": "integer", "minimum": 1}})
    assert param.resolve({"n": 2}) == {"n": 2}
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        param.resolve({"n": 0})
    assert jsonschema.validate is schema_checks.validate
