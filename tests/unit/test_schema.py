"""Signup event schema v1: valid events pass, each kind of bad input gets its own reason."""

from __future__ import annotations

import json
import random

import pytest

from onboarding.errors import InvalidEvent
from onboarding.schema import parse_signup, signup_schema, validate_signup
from risk.features import signup_schema_document
from risk.samples import new_signup


def good_event() -> dict:
    return new_signup(rng=random.Random(7))


def reason_of(payload: bytes | str, **kwargs) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_signup(payload, **kwargs)
    return info.value


def test_committed_schema_file_matches_the_feature_table() -> None:
    assert signup_schema(1) == signup_schema_document()


def test_sample_events_are_valid_and_typed() -> None:
    rng = random.Random(1)
    for _ in range(200):
        event = parse_signup(json.dumps(new_signup(rng=rng)))
        assert event.schema_version == 1
        assert event.occurred_at.tzinfo is not None
        assert set(event.application) == set(signup_schema(1)["properties"]["application"]["properties"])


def test_not_json() -> None:
    err = reason_of(b"{not json")
    assert err.reason == "not_json"


def test_not_utf8() -> None:
    assert reason_of(b"\xff\xfe{}").reason == "not_json"


def test_not_an_object() -> None:
    assert reason_of("[1, 2]").reason == "not_an_object"


def test_oversize_payload_is_refused_before_parsing() -> None:
    err = reason_of("x" * 70_000)
    assert err.reason == "oversize"
    assert "70000 bytes" in err.detail
    assert reason_of(json.dumps(good_event()), max_bytes=100).reason == "oversize"


def test_unknown_schema_version() -> None:
    event = good_event() | {"schema_version": 2}
    err = reason_of(json.dumps(event))
    assert err.reason == "unknown_schema_version"
    assert "supported: [1]" in err.detail


def test_missing_field_names_the_field() -> None:
    event = good_event()
    del event["application"]["age_years"]
    err = reason_of(json.dumps(event))
    assert err.reason == "missing_field"
    assert "age_years" in err.detail


def test_extra_field_is_refused() -> None:
    event = good_event() | {"ssn": "123"}
    err = reason_of(json.dumps(event))
    assert err.reason == "unknown_field"
    assert "ssn" in err.detail


def test_wrong_type_names_the_path() -> None:
    event = good_event()
    event["application"]["credit_amount"] = "lots"
    err = reason_of(json.dumps(event))
    assert err.reason == "wrong_type"
    assert err.detail.startswith("application.credit_amount")


def test_out_of_range_and_bad_enum() -> None:
    event = good_event()
    event["application"]["age_years"] = 12
    assert reason_of(json.dumps(event)).reason == "out_of_range"
    event = good_event()
    event["application"]["purpose"] = "yacht"
    err = reason_of(json.dumps(event))
    assert err.reason == "invalid_value"
    assert "yacht" in err.detail


@pytest.mark.parametrize("event_id", ["", "a" * 129, "has space", "semi;colon", "../etc"])
def test_event_id_must_be_short_and_safe(event_id: str) -> None:
    assert reason_of(json.dumps(good_event() | {"event_id": event_id})).reason == "invalid_value"


@pytest.mark.parametrize("stamp", ["yesterday", "2026-11-22", "2026-11-22T10:00:00"])
def test_occurred_at_needs_a_full_rfc3339_timestamp(stamp: str) -> None:
    assert reason_of(json.dumps(good_event() | {"occurred_at": stamp})).reason == "invalid_timestamp"


def test_boolean_is_not_a_schema_version() -> None:
    assert reason_of(json.dumps(good_event() | {"schema_version": True})).reason == "unknown_schema_version"


def test_validate_signup_round_trips() -> None:
    event = good_event()
    assert validate_signup(event).to_dict()["application"] == event["application"]


def test_payloads_that_would_crash_a_consumer_get_a_reason() -> None:
    assert reason_of(b"[" * 60_000).reason == "too_deep"
    event = json.dumps(good_event())
    assert reason_of(event.replace('"credit_amount": ', '"credit_amount": NaN, "x": ', 1)).reason == "invalid_value"
    assert reason_of('{"schema_version": 1, "event_id": 1e999}').reason == "invalid_value"
    lone = json.dumps(good_event() | {"user_id": "a\ud800b"})
    err = reason_of(lone)
    assert err.reason == "invalid_value" and "user_id" in err.detail
