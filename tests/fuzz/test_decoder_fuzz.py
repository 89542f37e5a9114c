"""Property-based fuzzing of ``decode_client_frame`` (pure and fast).

Whatever the bytes, the decoder either returns one of the client frame Structs
or raises ``FrameError`` with a code from the protocol's decoder codes, and
the code is the one docs/protocol.md prescribes (see ``tests/fuzz/model.py``
for the reference model that predicts it). ``requestId`` is echoed when it is
a string of at most 64 characters, and every id of a decoded frame is a
``str`` (an operator object such as ``{"$ne": null}`` never gets through).

The bugs this fuzzing found (deep nesting and invalid UTF-8 inside strings
escaping the decoder, a 64 KiB frame refused) are fixed; their tests stay.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.protocol import ClientFrame, FrameError, decode_client_frame
from tests.fuzz.model import (
    DECODER_CODES,
    FRAME_TYPES,
    INVALID_FORMAT,
    INVALID_MESSAGE,
    MONGO_OPERATORS,
    REQUEST_ID,
    SPECS,
    UNKNOWN_MESSAGE_TYPE,
    Expected,
    IdList,
    SeqMap,
    Str,
    dumps,
    echoed_request_id,
    expect_bytes,
    frames_missing_a_required_field,
    frames_with_invalid_utf8_between_tokens,
    frames_with_invalid_utf8_in_a_string,
    frames_with_one_bad_field,
    garbled_frames,
    json_values,
    protocol_like_objects,
    unknown_fields,
    valid_frames,
)

FRAME_STRUCTS = ClientFrame.__args__  # type: ignore[attr-defined]
STRUCT_FOR_TYPE = {t.__struct_config__.tag: t for t in FRAME_STRUCTS}

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_model_knows_every_frame_type() -> None:
    """The reference model covers exactly the decoder's frame types and fields."""
    assert set(STRUCT_FOR_TYPE) == set(FRAME_TYPES)
    for frame_type, struct in STRUCT_FOR_TYPE.items():
        wire_names = set(struct.__struct_encode_fields__)
        assert wire_names == {f.name for f in SPECS[frame_type]}, frame_type


# --- the property ---------------------------------------------------------------------------


def check(data: bytes | str, expected: Expected) -> ClientFrame | None:
    """Decode and hold the result to the oracle. Any other exception propagates."""
    if expected.code is None and not expected.ambiguous and isinstance(data, bytes):
        # A generated value may hold a lone surrogate, which makes the bytes
        # not text at all: the bytes oracle has the last word on that.
        expected = expect_bytes(data) if expect_bytes(data).code else expected
    try:
        frame = decode_client_frame(data)
    except FrameError as exc:
        assert exc.code in DECODER_CODES, (exc.code, data[:200])
        assert isinstance(exc.message, str) and exc.message
        if expected.ambiguous or exc.code in expected.alternatives:
            return None
        assert expected.code is not None, f"valid frame refused: {exc.code} {exc.message}"
        assert exc.code == expected.code, (exc.code, exc.message, data[:200])
        assert exc.request_id == expected.request_id, (exc.request_id, data[:200])
        return None
    assert isinstance(frame, FRAME_STRUCTS), frame
    if not expected.ambiguous:
        assert expected.code is None, f"expected {expected.code}, got {frame!r}"
    assert_ids_are_str(frame)
    return frame


def assert_ids_are_str(frame: ClientFrame) -> None:
    for field in SPECS[type(frame).__struct_config__.tag]:
        value = getattr(frame, field.attr)
        if not field.is_id or value is None:
            continue
        if isinstance(value, list):
            assert all(type(item) is str for item in value), value
        elif isinstance(value, dict):
            assert all(type(k) is str and type(v) is int for k, v in value.items()), value
        else:
            assert type(value) is str, (field.name, value)


def assert_decoded_as_sent(frame: ClientFrame, sent: dict[str, Any]) -> None:
    assert type(frame) is STRUCT_FOR_TYPE[sent["type"]]
    for field in SPECS[sent["type"]]:
        want = sent.get(field.name, field.default)
        assert getattr(frame, field.attr) == want, field.name


def check_both_ways(data: bytes) -> None:
    """The gateway hands the decoder bytes; str input must behave the same."""
    expected = expect_bytes(data)
    check(data, expected)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    check(text, expected)


# --- random input ---------------------------------------------------------------------------


@FAST
@given(value=json_values, ascii_only=st.booleans())
@example(value=[[[]]], ascii_only=True)
@example(value={"type": None, "requestId": "r1"}, ascii_only=True)
@example(value={"type": 42, "requestId": "r" * 64}, ascii_only=True)
@example(value={"type": "ping", "requestId": "r" * 65}, ascii_only=True)
@example(value={"type": "launch_rockets", "requestId": "abc"}, ascii_only=False)
@example(value={"type": {"$ne": None}}, ascii_only=True)
def test_any_json_value(value: Any, ascii_only: bool) -> None:
    # expect_bytes, not expect_value: a lone surrogate ("\ud800") is not text,
    # and the bytes decide what the decoder must say about it.
    data = dumps(value, ascii_only)
    check(data, expect_bytes(data))


@FAST
@given(text=st.text(max_size=200))
@example(text="")
@example(text="\ufeff{}")
@example(text='{"type":"ping"} {"type":"ping"}')
@example(text='{"type":"ping","requestId":"\\ud800"}')
@example(text='{"type":"ping","x":NaN}')
@example(text='{"type":"ping","x":1e400}')
def test_random_text(text: str) -> None:
    check_both_ways(text.encode())


@FAST
@given(data=st.binary(max_size=300).map(lambda b: b.replace(b'"', b"'")))
def test_random_bytes_without_strings(data: bytes) -> None:
    """Without a single '"' there is no string, hence no 'type': always INVALID_FORMAT."""
    with pytest.raises(FrameError) as info:
        decode_client_frame(data)
    assert info.value.code == INVALID_FORMAT and info.value.request_id is None


@FAST
@given(data=garbled_frames())
def test_garbled_frames(data: bytes) -> None:
    check_both_ways(data)


# --- protocol-shaped input ------------------------------------------------------------------


@FAST
@given(value=protocol_like_objects(), ascii_only=st.booleans())
def test_protocol_like_objects(value: dict[str, Any], ascii_only: bool) -> None:
    # expect_bytes, not expect_value: a lone surrogate ("\ud800") is not text,
    # and the bytes decide what the decoder must say about it.
    data = dumps(value, ascii_only)
    check(data, expect_bytes(data))


@FAST
@given(frame=valid_frames(), extra=unknown_fields)
def test_valid_frames_decode_and_unknown_fields_are_ignored(
    frame: dict[str, Any], extra: dict[str, Any]
) -> None:
    sent = {**extra, **frame}
    data = dumps(sent)
    decoded = check(data, Expected(None))
    if expect_bytes(data).code is not None:
        return  # a lone surrogate in a generated value: not text, refused as such
    assert decoded is not None
    assert_decoded_as_sent(decoded, sent)


@FAST
@given(case=frames_with_one_bad_field())
def test_one_bad_field_is_invalid_message(case: tuple[dict[str, Any], Any]) -> None:
    frame, field = case
    request_id = None if field is REQUEST_ID else echoed_request_id(frame)
    data = dumps(frame)
    with pytest.raises(FrameError) as info:
        decode_client_frame(data)
    # A lone surrogate (in the bad value or elsewhere) makes the frame not
    # UTF-8 text at all, which the decoder reports first, as the oracle says.
    expected = expect_bytes(data).code
    assert info.value.code == expected, (info.value.message, frame)
    if expected == INVALID_MESSAGE:
        assert info.value.request_id == request_id


@FAST
@given(frame=frames_missing_a_required_field())
def test_missing_required_field_is_invalid_message(frame: dict[str, Any]) -> None:
    data = dumps(frame)
    with pytest.raises(FrameError) as info:
        decode_client_frame(data)
    # A lone surrogate elsewhere in the frame makes it not text at all, which
    # the decoder reports first (the oracle in expect_bytes says so).
    assert info.value.code == (expect_bytes(data).code or INVALID_MESSAGE)
    if info.value.code != INVALID_MESSAGE:
        return
    assert info.value.request_id == echoed_request_id(frame)


ID_SLOTS = [
    (frame_type, field) for frame_type in FRAME_TYPES for field in SPECS[frame_type] if field.is_id
]


@pytest.mark.parametrize("operator", MONGO_OPERATORS, ids=lambda o: json.dumps(o)[:24])
@pytest.mark.parametrize(
    ("frame_type", "field"), ID_SLOTS, ids=[f"{t}.{f.name}" for t, f in ID_SLOTS]
)
def test_operator_object_where_an_id_belongs(frame_type: str, field: Any, operator: Any) -> None:
    frame: dict[str, Any] = {f.name: _minimal(f) for f in SPECS[frame_type] if f.required}
    frame.update(type=frame_type, requestId="op")
    # Directly in the slot, and inside the list or map that holds ids.
    if isinstance(field.kind, IdList):
        slots = [operator, [operator], ["u1", operator]]
    elif isinstance(field.kind, SeqMap):
        slots = [operator, {"c1": operator}]
    else:
        slots = [operator]
    # A map keyed by "$gte" is a well-formed sync map: the key is just a string.
    for slot in [s for s in slots if not field.accepts(s)]:
        with pytest.raises(FrameError) as info:
            decode_client_frame(dumps({**frame, field.name: slot}))
        assert info.value.code == INVALID_MESSAGE, slot
        assert info.value.request_id == "op"


def _minimal(field: Any) -> Any:
    kind = field.kind
    if isinstance(kind, Str):
        return "x" * max(kind.low, 1)
    if isinstance(kind, IdList):
        return ["u1"]
    if isinstance(kind, SeqMap):
        return {"c1": 0}
    return True if kind.__class__.__name__ == "Bool" else kind.low


BOUNDED = [
    (frame_type, field)
    for frame_type in FRAME_TYPES
    for field in SPECS[frame_type]
    if isinstance(field.kind, Str | IdList | SeqMap)
]


@pytest.mark.parametrize(
    ("frame_type", "field"), BOUNDED, ids=[f"{t}.{f.name}" for t, f in BOUNDED]
)
def test_size_bounds_are_exact(frame_type: str, field: Any) -> None:
    """At the bound the frame decodes; one past it (strings in 4-byte chars too) it does not."""
    base = {f.name: _minimal(f) for f in SPECS[frame_type] if f.required}
    base["type"] = frame_type
    kind = field.kind
    if isinstance(kind, Str):
        at, past = [c * kind.high for c in "x\U0001f600"], [c * (kind.high + 1) for c in "x😀"]
    elif isinstance(kind, IdList):
        at, past = [["u"] * kind.max_items], [["u"] * (kind.max_items + 1)]
    else:
        at = [{f"c{i}": 0 for i in range(kind.max_items)}]
        past = [{f"c{i}": 0 for i in range(kind.max_items + 1)}]
    for value in at:
        check(dumps({**base, field.name: value}), Expected(None))
    for value in past:
        check(dumps({**base, field.name: value}), Expected(INVALID_MESSAGE))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"fetch_history","conversationId":"c","beforeSeq":9007199254740993}',
        b'{"type":"fetch_history","conversationId":"c","beforeSeq":' + b"9" * 400 + b"}",
        b'{"type":"fetch_history","conversationId":"c","beforeSeq":-1}',
        b'{"type":"fetch_history","conversationId":"c","limit":-' + b"9" * 400 + b"}",
        b'{"type":"fetch_history","conversationId":"c","limit":5.0}',
        b'{"type":"fetch_history","conversationId":"c","limit":true}',
        b'{"type":"sync","conversations":{"c":18446744073709551616}}',
        b'{"type":"read_receipt","conversationId":"c","seq":1e3}',
    ],
)
def test_huge_and_negative_numbers_are_invalid_message(raw: bytes) -> None:
    check(raw, expect_bytes(raw))
    assert expect_bytes(raw).code == INVALID_MESSAGE


def test_unknown_type_is_reported_whatever_else_is_wrong() -> None:
    raw = b'{"type":"nope","requestId":"r","conversationId":{"$ne":null},"x":' + b"9" * 400 + b"}"
    check(raw, Expected(UNKNOWN_MESSAGE_TYPE, "r"))


# --- encodings and nesting: where the decoder breaks ----------------------------------------


@FAST
@given(data=frames_with_invalid_utf8_between_tokens())
def test_invalid_utf8_outside_strings_is_invalid_format(data: bytes) -> None:
    check(data, Expected(INVALID_FORMAT))


@settings(FAST, max_examples=50, report_multiple_bugs=False)
@given(data=frames_with_invalid_utf8_in_a_string())
@example(data=b'{"type":"ping","requestId":"\xff"}')
@example(data=b'{"type":"send_message","conversationId":"c","content":"a\xc3"}')
def test_invalid_utf8_inside_a_string_is_invalid_format(data: bytes) -> None:
    check(data, Expected(INVALID_FORMAT))


@pytest.mark.parametrize(
    "text", ['{"type":"ping","requestId":"\ud800"}', '{"type":"ping"}\udfff', "\udc80"]
)
def test_lone_surrogate_in_str_input_is_invalid_format(text: str) -> None:
    check(text, Expected(INVALID_FORMAT))


def _nested(depth: int, opener: bytes, closer: bytes, inner: bytes = b"1") -> bytes:
    return opener * depth + inner + closer * depth


SHALLOW = 200
DEEP = 10_000


@pytest.mark.parametrize(
    ("depth", "data", "codes"),
    [
        (SHALLOW, b"[" * SHALLOW, {INVALID_FORMAT}),
        (SHALLOW, _nested(SHALLOW, b"[", b"]"), {INVALID_FORMAT}),
        (SHALLOW, b'{"type":"ping","x":' + _nested(SHALLOW, b"[", b"]") + b"}", None),
        (SHALLOW, b'{"type":"ping","x":' + _nested(SHALLOW, b'{"a":', b"}") + b"}", None),
        pytest.param(DEEP, b"[" * DEEP, {INVALID_FORMAT}),
        pytest.param(DEEP, b'{"a":' * DEEP, {INVALID_FORMAT}),
        pytest.param(DEEP, _nested(DEEP, b"[", b"]"), {INVALID_FORMAT}),
        pytest.param(
            DEEP,
            b'{"type":"ping","requestId":"r","x":' + _nested(DEEP, b"[", b"]") + b"}",
            {INVALID_FORMAT, INVALID_MESSAGE},
        ),
        pytest.param(
            DEEP,
            b'{"type":"nope","x":' + _nested(DEEP, b'{"a":', b"}") + b"}",
            {INVALID_FORMAT, UNKNOWN_MESSAGE_TYPE},
        ),
    ],
    ids=[
        "shallow-open",
        "shallow-array",
        "shallow-unknown-field",
        "shallow-unknown-object",
        "deep-open",
        "deep-open-object",
        "deep-array",
        "deep-unknown-field",
        "deep-unknown-type",
    ],
)
def test_deep_nesting(depth: int, data: bytes, codes: set[str] | None) -> None:
    """Deep nesting is refused (or, in an ignored field, tolerated), never a crash.

    ``codes`` is the set of acceptable error codes; None means "decodes or any
    decoder code" (a nested unknown field may be ignored or refused).
    """
    try:
        frame = decode_client_frame(data)
    except FrameError as exc:
        assert exc.code in (codes or DECODER_CODES), exc.code
        return
    assert codes is None, f"nesting {depth} decoded: {type(frame).__name__}"
