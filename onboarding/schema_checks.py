"""Validate DAG params without re-checking their schema against the metaschema every time.

Airflow validates each Param of a triggered run with `jsonschema.validate(value, schema)`,
which first checks the *schema* against the JSON Schema metaschema, then the value. For
the onboarding DAG's params (the signup contract, with nested enums) the schema check is
over 95% of the validation and about a third of the REST API's trigger call
(docs/benchmarks.md has the profile). A schema that passed the check once passes it again,
so `memoize_schema_checks()` makes `jsonschema.validate` remember the schemas it has
checked; the value is validated in full every time, and a schema that fails the check
still raises every time (only successes are remembered).

`deploy/realtime/airflow_local_settings.py` installs it in every process of the realtime
instance (API server, scheduler, task processes).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import jsonschema
from jsonschema import exceptions, validators

_checked: set[tuple[type, str]] = set()
_lock = threading.Lock()
_MAX_SCHEMAS = 1024  # DAG params are few; bound the memory if something generates schemas
_original_validate = jsonschema.validate


def _key(cls: type, schema: Any) -> tuple[type, str] | None:
    try:
        return cls, json.dumps(schema, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None


def validate(instance: Any, schema: Any, cls: type | None = None, *args: Any, **kwargs: Any) -> None:
    """`jsonschema.validate` with the schema check remembered per (validator class, schema)."""
    if cls is None:
        cls = validators.validator_for(schema)
    key = _key(cls, schema)
    if key is None or key not in _checked:
        cls.check_schema(schema)  # raises SchemaError for a bad schema, every time
        if key is not None:
            with _lock:
                if len(_checked) >= _MAX_SCHEMAS:
                    _checked.clear()
                _checked.add(key)
    validator = cls(schema, *args, **kwargs)
    error = exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def memoize_schema_checks() -> None:
    """Install `validate` as `jsonschema.validate` (idempotent)."""
    jsonschema.validate = validate


def restore() -> None:
    jsonschema.validate = _original_validate
    with _lock:
        _checked.clear()
