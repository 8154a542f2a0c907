"""Validate Airflow Params without re-checking their schemas against the metaschema every time.

Where Airflow validates Params (3.3.2): a triggered run's conf in the API server
(`SerializedDAG.create_dagrun` -> `SerializedParamsDict.validate` -> `SerializedParam.resolve`)
and again in each task process (`process_params` -> `ParamsDict` -> `Param.resolve`). Both
resolve methods run `from jsonschema import FormatChecker, validate` *inside the method* and
call `validate(value, schema, format_checker=FormatChecker())`. The name is looked up on the
`jsonschema` module at each call; no Airflow module holds it, so `jsonschema.validate` is the
narrowest seam there is (the alternative, replacing both resolve methods, would copy Airflow
code). `jsonschema.validate` first checks the *schema* against the JSON Schema metaschema,
then the value: for the onboarding DAG's Params (the signup contract, with nested enums) the
schema check is about 95 % of the validation and, in a profile, a third of the API server's
trigger call (docs/benchmarks.md).

`validate` below is jsonschema's `validate` (same signature, validator class, arguments and
`best_match` error) except that it remembers which (validator class, schema JSON) pairs have
passed `check_schema` and skips the check for them. Values are validated in full every time;
a schema that fails the check is not remembered, so it raises `SchemaError` every time.

`install()` puts it in place of `jsonschema.validate` and refuses (logging why) when
`jsonschema.validate` is not the function it mirrors or Airflow is a release it was not proven
on (airflow_adapter/versions.py). `airflow_adapter.local_settings` installs it in every
process of the realtime instance unless ONBOARDING_MEMOIZE_PARAM_SCHEMAS is false.
tests/unit/test_schema_checks.py fails when an upgrade of jsonschema changes the function
mirrored here, or when Airflow's Params stop going through `jsonschema.validate` or
stop re-checking schemas; `benchmarks/param_schemas.py` measures what it buys.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from typing import Any

import jsonschema
from jsonschema import exceptions, validators
from jsonschema.protocols import Validator

from airflow_adapter.versions import ADJUSTMENTS, proven

ENV_VAR = ADJUSTMENTS[__name__].switch  # ONBOARDING_MEMOIZE_PARAM_SCHEMAS
MAX_SCHEMAS = 1024  # DAG Params are few; bound the memory if something generates schemas
logger = logging.getLogger(__name__)

_original_validate = validators.validate
_EXPECTED_SIGNATURE = "(instance, schema, cls=None, *args, **kwargs)"
_checked: set[tuple[type, str]] = set()
_lock = threading.Lock()


def _key(schema: Any) -> str | None:
    try:
        return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # not plain JSON: check it every time
        return None


def validate(instance: Any, schema: Any, cls: type[Validator] | None = None, *args: Any, **kwargs: Any) -> None:
    """`jsonschema.validate`, checking each distinct schema against its metaschema once."""
    if cls is None:
        cls = validators.validator_for(schema)
    key = _key(schema)
    if key is None or (cls, key) not in _checked:
        cls.check_schema(schema)  # raises SchemaError; failures are never remembered
        if key is not None:
            with _lock:
                if len(_checked) >= MAX_SCHEMAS:
                    _checked.clear()
                _checked.add((cls, key))
    validator = cls(schema, *args, **kwargs)
    error = exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def install(airflow: str | None = None) -> bool:
    """Use `validate` as `jsonschema.validate` in this process (idempotent); False if jsonschema
    has changed or Airflow (`airflow`, default: the installed release) is not one it was proven on."""
    current = jsonschema.validate
    if current is validate:
        return True
    if not proven(__name__, airflow):
        return False
    if current is not _original_validate:
        reason = f"something else replaced it with {current!r}"
    elif (signature := str(inspect.signature(current))) != _EXPECTED_SIGNATURE:
        reason = f"its signature is {signature}, not the {_EXPECTED_SIGNATURE} that this mirrors"
    else:
        jsonschema.validate = validate
        return True
    logger.warning(
        "onboarding: Param schema checks are not memoized (Params are validated as usual, more slowly): "
        "jsonschema.validate is not the function airflow_adapter/schema_checks.py mirrors: %s",
        reason,
    )
    return False


def uninstall() -> None:
    """Put jsonschema's own `validate` back and forget the checked schemas."""
    if jsonschema.validate is validate:
        jsonschema.validate = _original_validate
    with _lock:
        _checked.clear()


def installed() -> bool:
    return jsonschema.validate is validate
