"""Hostile payloads never stop a listener (issue: one poison entry crash-looped every
listener). Property test against a real Redis: whatever sits in front of an honest signup -
nesting thousands deep, oversize entries, numbers with 5,000 digits, ids ending in a
newline - the loop returns, each poison entry is dead-lettered with a reason, the dead
letter is bounded and listable, and the honest signup behind them is triggered."""

from __future__ import annotations

import json
import random

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.consumer import Listener
from listener.deadletters import list_dead_letters, replay
from onboarding.errors import InvalidEvent
from onboarding.keys import run_id_for
from onboarding.publisher import publish_raw, publish_signup
from onboarding.schema import parse_signup
from onboarding.untrusted import loads_untrusted, nesting_depth
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL
from tests.unit.test_listener import SETTINGS, FakeAirflow, dead_letters, pending_count

POISON_REASONS = {"oversize", "too_deep", "not_json", "invalid_value", "not_an_object", "missing_field"}


def _with_digits(digits: int) -> str:
    event = new_signup(rng=random.Random(digits))
    text = json.dumps(event)
    return text.replace(f'"credit_amount": {event["application"]["credit_amount"]}', f'"credit_amount": {"9" * digits}')


def poison_payloads() -> st.SearchStrategy[str | bytes]:
    depth = st.integers(min_value=33, max_value=200_000)
    return st.one_of(
        depth.map(lambda n: "[" * n),
        depth.map(lambda n: "[" * n + "]" * n),
        depth.map(lambda n: '{"a":' * n + "1" + "}" * n),
        st.integers(min_value=64 * 1024 + 1, max_value=2 * 1024 * 1024).map(lambda n: "x" * n),
        st.integers(min_value=4_301, max_value=20_000).map(_with_digits),
        st.sampled_from(["\n", "\r\n", "\n\n"]).map(lambda end: json.dumps(new_signup(event_id=f"evt-nl{end}"))),
        st.sampled_from(["\n", "\r\n"]).map(lambda end: json.dumps(new_signup(user_id=f"user{end}"))),
        st.binary(min_size=1, max_size=256),
    )


def test_each_known_attack_is_refused_with_its_reason() -> None:
    assert _reason("[" * 100_000) == "oversize"
    assert _reason("[" * 5_000 + "]" * 5_000) == "too_deep"
    assert _reason('{"a":' * 3_000 + "1" + "}" * 3_000) == "too_deep"
    assert _reason(_with_digits(5_000)) == "invalid_value"
    assert _reason(json.dumps(new_signup(event_id="evt-1\n"))) == "invalid_value"
    assert _reason(json.dumps(new_signup(user_id="user-1\n"))) == "invalid_value"
    # Brackets inside strings are text, not nesting: an honest payload that quotes them passes.
    assert nesting_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == 1
    assert loads_untrusted('{"a": [[1]], "b": "\\"[[["}') == {"a": [[1]], "b": '"[[['}


def _reason(payload: str) -> str:
    try:
        parse_signup(payload)
    except InvalidEvent as err:
        return err.reason
    raise AssertionError("accepted a hostile payload")


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(poison=st.lists(poison_payloads(), min_size=1, max_size=4))
def test_hostile_entries_are_dead_lettered_and_the_honest_one_behind_them_is_triggered(
    redis_client: redis.Redis, poison: list[str | bytes]
) -> None:
    redis_client.flushdb()
    stream = SETTINGS.streams.signups_stream
    for payload in poison:
        publish_raw(redis_client, stream, payload)
    honest = new_signup()
    publish_signup(redis_client, stream, honest)
    airflow = FakeAirflow()
    settled = Listener(redis_client, airflow, SETTINGS).run(burst=True)
    assert settled == len(poison) + 1
    assert pending_count(redis_client) == 0
    assert list(airflow.runs) == [run_id_for(honest["event_id"])]
    letters = dead_letters(redis_client)
    assert len(letters) == len(poison)
    for letter in letters:
        assert letter["reason"] in POISON_REASONS, letter["reason"]
        assert len(letter["original.payload"].encode("utf-8", errors="replace")) <= 3 * SETTINGS.max_payload_bytes
    # The dead-letter tooling reads every one of them (it broke on the same entries).
    listed = list_dead_letters(redis.Redis.from_url(TEST_REDIS_URL), SETTINGS.streams.dead_letter_stream)
    assert [json.dumps(d.to_dict()) for d in listed]


def test_an_oversize_dead_letter_is_cut_with_its_size_and_hash_and_not_replayed(redis_client: redis.Redis) -> None:
    publish_raw(redis_client, SETTINGS.streams.signups_stream, "x" * (1024 * 1024))
    Listener(redis_client, FakeAirflow(), SETTINGS).run(burst=True)
    letter = list_dead_letters(redis_client, SETTINGS.streams.dead_letter_stream)[0]
    assert letter.reason == "oversize"
    assert len(letter.original["payload"]) == SETTINGS.max_payload_bytes
    assert letter.cut["payload"].startswith("1048576 bytes sha256:")
    assert replay(redis_client, SETTINGS.streams.dead_letter_stream, SETTINGS.streams.signups_stream, [letter]) == [
        (letter, None)
    ]
    assert redis_client.xlen(SETTINGS.streams.dead_letter_stream) == 1
