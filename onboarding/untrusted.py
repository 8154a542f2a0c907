"""Bounded parsing of bytes that came from outside (a stream entry an app wrote).

Every parse of untrusted bytes goes through `loads_untrusted`: the size is checked before
anything is decoded, the nesting depth is checked by a linear scan before the JSON parser
(whose recursion would otherwise end in a RecursionError, or deeper in C), and every
failure of the parser (bad UTF-8, bad JSON, an integer past Python's 4,300-digit limit,
NaN/Infinity) is one `InvalidEvent` with a reason code. Nothing else escapes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from onboarding.errors import InvalidEvent

DEFAULT_MAX_BYTES = 64 * 1024
# A signup event is three levels deep; 32 leaves room for any honest payload of ours.
DEFAULT_MAX_DEPTH = 32


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    opened = raw.count(b"[") + raw.count(b"{")
    if opened <= 1:
        return opened
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def loads_untrusted(
    payload: bytes | str | None, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Decode untrusted JSON within the limits, or raise InvalidEvent (never anything else)."""
    if payload is None:
        raise InvalidEvent("missing_payload", "the stream entry has no 'payload' field")
    raw = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload
    if not isinstance(raw, bytes | bytearray):
        raise InvalidEvent("not_json", f"payload is {type(payload).__name__}, not bytes")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"payload is {len(raw)} bytes; the limit is {max_bytes}")
    depth = nesting_depth(bytes(raw))
    if depth > max_depth:
        raise InvalidEvent("too_deep", f"payload is nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InvalidEvent:
        raise
    except UnicodeDecodeError as err:
        raise InvalidEvent("not_json", f"payload is not valid UTF-8: {err.reason} at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise InvalidEvent("not_json", f"payload is not valid JSON: {err.msg} at line {err.lineno}") from None
    except ValueError as err:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise InvalidEvent("invalid_value", f"payload has a value Python cannot read: {str(err)[:120]}") from None
    except RecursionError:  # unreachable after the depth check; kept as a last fence
        raise InvalidEvent("too_deep", "payload is nested too deeply to be read") from None


def field_of(payload: bytes | str | None, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """One top-level field of an untrusted JSON object, or None if it cannot be read."""
    try:
        data = loads_untrusted(payload, max_bytes)
    except InvalidEvent:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEvent("invalid_value", f"{text[:40]} is not a finite number")
    return value


def _refuse_constant(name: str) -> Any:
    # json accepts NaN and Infinity, which no JSON consumer downstream (Airflow's API) does.
    raise InvalidEvent("invalid_value", f"{name} is not a JSON number")
