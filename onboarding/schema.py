"""Signup event schema v1: the JSON Schema file is the contract; `SignupEvent` is its typed form.

`parse_signup` turns raw stream bytes into a `SignupEvent` or raises `InvalidEvent` with a
short reason code and a sentence that says what is wrong and where.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from onboarding.errors import InvalidEvent
from onboarding.settings import DEFAULT_DATASET
from onboarding.untrusted import DEFAULT_MAX_BYTES, loads_untrusted

SCHEMA_DIR = Path(__file__).parent / "schemas"
SUPPORTED_VERSIONS = (1,)
DEFAULT_MAX_PAYLOAD_BYTES = DEFAULT_MAX_BYTES

# jsonschema validator keyword -> reason code a dead-letter reader can filter on.
_REASONS = {
    "required": "missing_field",
    "additionalProperties": "unknown_field",
    "type": "wrong_type",
    "minimum": "out_of_range",
    "maximum": "out_of_range",
    "enum": "invalid_value",
    "const": "invalid_value",
    "pattern": "invalid_value",
    "minLength": "invalid_value",
    "maxLength": "invalid_value",
}


@cache
def signup_schema(version: int = 1, dataset: str = DEFAULT_DATASET) -> dict[str, Any]:
    """The JSON Schema of a signup event of this version, for the data set the service runs
    with (ONBOARDING_DATASET): `signup.v1.json` for German credit, `signup.<dataset>.v1.json`
    for another."""
    name = f"signup.v{version}.json" if dataset == DEFAULT_DATASET else f"signup.{dataset}.v{version}.json"
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # JSON Schema patterns are ECMA-262: `$` is the end of the text. Python's `$` also
    # matches before a final newline, so "evt-1\n" would pass `^...$` and reach keys and logs.
    if isinstance(instance, str) and not re.search(_python_regex(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _python_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@cache
def _validator(version: int, dataset: str = DEFAULT_DATASET) -> Any:
    return _Validator(signup_schema(version, dataset))


@dataclass(frozen=True)
class SignupEvent:
    """A validated signup event."""

    schema_version: int
    event_id: str
    user_id: str
    occurred_at: datetime
    application: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "occurred_at": self.occurred_at.isoformat(),
            "application": dict(self.application),
        }


def parse_signup(
    payload: bytes | str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, dataset: str = DEFAULT_DATASET
) -> SignupEvent:
    """Validate a raw signup payload against its schema version (bounded: onboarding.untrusted)
    and the data set's contract."""
    data = loads_untrusted(payload, max_bytes)
    try:
        return validate_signup(data, dataset)
    except RecursionError:  # the depth limit makes this unreachable; a last fence
        raise InvalidEvent("too_deep", "payload is nested too deeply to be a signup event") from None


def _check_text(value: Any, where: str = "event") -> None:
    """Strings must be encodable: a lone surrogate passes JSON parsing but not UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent("invalid_value", f"{where}: text is not valid Unicode (lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}" if where != "event" else str(key))
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where)


def validate_signup(data: Any, dataset: str = DEFAULT_DATASET) -> SignupEvent:
    """Validate an already decoded signup event (against the data set's contract)."""
    if not isinstance(data, dict):
        raise InvalidEvent("not_an_object", f"a signup event is a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise InvalidEvent("missing_field", "schema_version is required")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise InvalidEvent(
            "unknown_schema_version",
            f"schema_version {version!r} is not supported; supported: {list(SUPPORTED_VERSIONS)}",
        )
    _check_text(data)
    errors = sorted(_validator(version, dataset).iter_errors(data), key=_error_order)
    if errors:
        raise _to_invalid(errors[0], len(errors))
    occurred_at = _parse_timestamp(data["occurred_at"])
    return SignupEvent(
        schema_version=version,
        event_id=data["event_id"],
        user_id=data["user_id"],
        occurred_at=occurred_at,
        application=data["application"],
    )


def _error_order(error: ValidationError) -> tuple[int, str]:
    return (len(error.absolute_path), ".".join(map(str, error.absolute_path)))


def _to_invalid(error: ValidationError, count: int) -> InvalidEvent:
    where = ".".join(str(p) for p in error.absolute_path) or "event"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return InvalidEvent(_REASONS.get(str(error.validator), "schema_violation"), f"{where}: {message}{more}")


def _parse_timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("invalid_timestamp", f"occurred_at: {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise InvalidEvent(
            "invalid_timestamp",
            f"occurred_at: {value!r} must be an RFC 3339 date-time with a time zone offset",
        )
    return parsed
