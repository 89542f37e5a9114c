"""A reference model of the client frames and Hypothesis strategies built on it.

The model restates docs/protocol.md (field names, which fields are required,
the documented bounds) plus the size bounds of ``shared/protocol.py`` in plain
Python, independently of msgspec, so that the fuzz tests can predict for any
input whether ``decode_client_frame`` must accept it and, if not, which error
code the protocol prescribes:

- not JSON, not an object, or no string ``type``  -> ``INVALID_FORMAT``
- a string ``type`` that is not a client frame type -> ``UNKNOWN_MESSAGE_TYPE``
- a known type with a field missing / of the wrong type or size -> ``INVALID_MESSAGE``

and whether ``requestId`` must be echoed (a string of at most 64 characters).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

INVALID_FORMAT = "INVALID_FORMAT"
UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
INVALID_MESSAGE = "INVALID_MESSAGE"
DECODER_CODES = frozenset({INVALID_FORMAT, UNKNOWN_MESSAGE_TYPE, INVALID_MESSAGE})

MAX_REQUEST_ID = 64
MAX_SEQ = 2**53

# Where an id belongs, a client trying NoSQL injection sends an operator object.
MONGO_OPERATORS: list[Any] = [
    {"$ne": None},
    {"$ne": ""},
    {"$gt": ""},
    {"$gte": 0},
    {"$regex": ".*"},
    {"$regex": "^", "$options": "i"},
    {"$where": "sleep(1000) || true"},
    {"$exists": True},
    {"$in": ["a", "b"]},
    {"$nin": []},
    {"$expr": {"$eq": [1, 1]}},
    {"$function": {"body": "function() { return true }", "args": [], "lang": "js"}},
    {"$elemMatch": {"$ne": None}},
    [{"$ne": None}],
]

# --- JSON values -------------------------------------------------------------------------

huge_ints = st.integers(min_value=-(2**256), max_value=2**256)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    )


json_values: st.SearchStrategy[Any] = st.recursive(json_scalars, _extend, max_leaves=12)
operator_objects: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(MONGO_OPERATORS),
    st.dictionaries(
        st.text(max_size=8).map(lambda s: "$" + s), json_scalars, min_size=1, max_size=2
    ),
)


def _non(*excluded: type) -> st.SearchStrategy[Any]:
    """JSON values of every shape except the excluded Python types (and never null)."""
    candidates: list[st.SearchStrategy[Any]] = []
    if int not in excluded:
        candidates += [st.integers(), huge_ints]
    if float not in excluded:
        candidates.append(st.floats(allow_nan=False, allow_infinity=False))
    if bool not in excluded:
        candidates.append(st.booleans())
    if str not in excluded:
        candidates.append(st.text(max_size=12))
    if list not in excluded:
        candidates.append(st.lists(json_scalars, max_size=3))
    if dict not in excluded:
        candidates += [st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)]
        candidates.append(operator_objects)
    return st.one_of(candidates)


# --- field kinds --------------------------------------------------------------------------


def _repeat(low: int, high: int) -> st.SearchStrategy[str]:
    """A string of ``low..high`` copies of one character (any plane)."""
    return st.builds(lambda c, n: c * n, st.characters(), st.integers(low, high))


@dataclass(frozen=True)
class Str:
    low: int
    high: int

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and self.low <= len(value) <= self.high

    def valid(self) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.text(min_size=self.low, max_size=min(self.high, self.low + 16)),
            _repeat(self.high, self.high),  # exactly at the bound
        )

    def invalid(self) -> st.SearchStrategy[Any]:
        options = [_non(str), _repeat(self.high + 1, self.high + 40)]
        if self.low > 0:
            options.append(st.just(""))
        return st.one_of(options)


@dataclass(frozen=True)
class Int:
    low: int
    high: int

    def check(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high

    def valid(self) -> st.SearchStrategy[Any]:
        return st.integers(self.low, self.high)

    def invalid(self) -> st.SearchStrategy[Any]:
        return st.one_of(
            _non(int, float),
            st.integers(max_value=self.low - 1),
            st.integers(min_value=self.high + 1),
            st.sampled_from([2**64, 2**200, -(2**200)]),
            # Integral floats and numeric strings are still the wrong type.
            st.integers(self.low, self.high).map(float),
            st.integers(self.low, self.high).map(str),
            st.floats(allow_nan=False, allow_infinity=False),
        )


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any) -> bool:
        return isinstance(value, bool)

    def valid(self) -> st.SearchStrategy[Any]:
        return st.booleans()

    def invalid(self) -> st.SearchStrategy[Any]:
        return st.one_of(_non(bool), st.sampled_from([0, 1, "true", "false"]))


ID = Str(1, 128)
SEQ = Int(0, MAX_SEQ)


@dataclass(frozen=True)
class IdList:
    max_items: int

    def check(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) <= self.max_items
            and all(ID.check(item) for item in value)
        )

    def valid(self) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(ID.valid(), max_size=4),
            st.integers(0, self.max_items).map(lambda n: [f"u{i}" for i in range(n)]),
        )

    def invalid(self) -> st.SearchStrategy[Any]:
        with_bad_item = st.builds(
            lambda good, bad, at: [*good[:at], bad, *good[at:]],
            st.lists(ID.valid(), max_size=3),
            ID.invalid(),
            st.integers(0, 3),
        )
        too_long = st.integers(1, 20).map(lambda k: ["u"] * (self.max_items + k))
        return st.one_of(_non(list), with_bad_item, too_long)


@dataclass(frozen=True)
class SeqMap:
    max_items: int

    def check(self, value: Any) -> bool:
        return (
            isinstance(value, dict)
            and len(value) <= self.max_items
            and all(ID.check(k) and SEQ.check(v) for k, v in value.items())
        )

    def valid(self) -> st.SearchStrategy[Any]:
        return st.dictionaries(ID.valid(), SEQ.valid(), max_size=4)

    def invalid(self) -> st.SearchStrategy[Any]:
        bad_key = st.builds(
            lambda good, key, seq: {**good, key: seq},
            st.dictionaries(ID.valid(), SEQ.valid(), max_size=2),
            st.one_of(st.just(""), _repeat(129, 160)),
            SEQ.valid(),
        )
        bad_value = st.builds(
            lambda good, key, seq: {**good, key: seq},
            st.dictionaries(ID.valid(), SEQ.valid(), max_size=2),
            ID.valid(),
            SEQ.invalid(),
        )
        too_many = st.integers(1, 10).map(lambda k: {f"c{i}": 0 for i in range(self.max_items + k)})
        return st.one_of(_non(dict), bad_key, bad_value, too_many)


Kind = Str | Int | Bool | IdList | SeqMap


@dataclass(frozen=True)
class Field:
    name: str  # on the wire (camelCase)
    attr: str  # on the decoded Struct
    kind: Kind
    required: bool = False
    nullable: bool = False  # may be sent as null
    default: Any = None  # when absent
    is_id: bool = False  # decoded value must be a str (or list/dict of str)

    def accepts(self, value: Any) -> bool:
        return (value is None and self.nullable) or self.kind.check(value)


REQUEST_ID = Field("requestId", "request_id", Str(0, MAX_REQUEST_ID), nullable=True)


def _id(name: str, attr: str, required: bool = True) -> Field:
    return Field(name, attr, ID, required=required, nullable=not required, is_id=True)


SPECS: dict[str, tuple[Field, ...]] = {
    "send_message": (
        _id("conversationId", "conversation_id"),
        Field("content", "content", Str(1, 4000), required=True),
        Field("contentType", "content_type", Str(1, 64), default="text"),
        _id("clientMessageId", "client_message_id", required=False),
    ),
    "typing_indicator": (
        _id("conversationId", "conversation_id"),
        Field("isTyping", "is_typing", Bool(), required=True),
    ),
    "read_receipt": (
        _id("messageId", "message_id", required=False),
        _id("conversationId", "conversation_id", required=False),
        Field("seq", "seq", SEQ, nullable=True),
    ),
    "fetch_history": (
        _id("conversationId", "conversation_id"),
        Field("beforeSeq", "before_seq", SEQ, nullable=True),
        Field("limit", "limit", Int(1, 100), default=50),
    ),
    "create_conversation": (
        Field("participantIds", "participant_ids", IdList(100), required=True, is_id=True),
        Field("title", "title", Str(0, 200), nullable=True),
    ),
    "list_conversations": (),
    "subscribe_presence": (Field("userIds", "user_ids", IdList(200), required=True, is_id=True),),
    "unsubscribe_presence": (Field("userIds", "user_ids", IdList(200), required=True, is_id=True),),
    "ack_queued": (Field("upTo", "up_to", Str(1, 64), required=True),),
    "sync": (Field("conversations", "conversations", SeqMap(500), required=True, is_id=True),),
    "ping": (),
}
SPECS = {name: (*fields, REQUEST_ID) for name, fields in SPECS.items()}
FRAME_TYPES = sorted(SPECS)
FIELD_NAMES = sorted({f.name for fields in SPECS.values() for f in fields})


# --- the oracle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    code: str | None  # None: the frame must decode
    request_id: str | None = None  # what an error must echo
    ambiguous: bool = False  # duplicate keys: any decoder code is acceptable
    # Also acceptable (without an echoed requestId): numbers beyond double range
    # may be refused as not JSON, RFC 8259 section 9 lets a parser limit them.
    alternatives: frozenset[str] = frozenset()


def echoed_request_id(value: dict[str, Any]) -> str | None:
    request_id = value.get("requestId")
    if isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID:
        return request_id
    return None


def frame_is_valid(value: dict[str, Any]) -> bool:
    fields = SPECS[value["type"]]
    for field in fields:
        if field.name in value:
            if not field.accepts(value[field.name]):
                return False
        elif field.required:
            return False
    return True


def expect_value(value: Any) -> Expected:
    """What decoding the JSON encoding of ``value`` must give."""
    if not isinstance(value, dict):
        return Expected(INVALID_FORMAT)
    request_id = echoed_request_id(value)
    frame_type = value.get("type")
    if not isinstance(frame_type, str):
        return Expected(INVALID_FORMAT, request_id)
    if frame_type not in SPECS:
        return Expected(UNKNOWN_MESSAGE_TYPE, request_id)
    if frame_is_valid(value):
        return Expected(None)
    return Expected(INVALID_MESSAGE, request_id)


class _Duplicate(ValueError):
    pass


class _NotJson(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate
    return dict(pairs)


def _reject_constant(_: str) -> Any:  # NaN, Infinity: not JSON
    raise _NotJson


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def expect_bytes(data: bytes) -> Expected:
    """The oracle for raw frame bytes: strict JSON (RFC 8259, UTF-8) then ``expect_value``."""
    out_of_range = False

    def parse_float(text: str) -> float:
        nonlocal out_of_range
        number = float(text)
        out_of_range |= not math.isfinite(number)
        return number

    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=parse_float,
            parse_constant=_reject_constant,
        )
    except _Duplicate:
        return Expected(None, ambiguous=True)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Expected(INVALID_FORMAT)
    if has_lone_surrogate(value):  # "\ud800": not a Unicode string
        # Still JSON: the error echoes a requestId that is itself Unicode.
        request_id = echoed_request_id(value) if isinstance(value, dict) else None
        if request_id is not None and has_lone_surrogate(request_id):
            request_id = None
        return Expected(INVALID_FORMAT, request_id)
    expected = expect_value(value)
    if out_of_range:
        return Expected(
            expected.code, expected.request_id, alternatives=frozenset({INVALID_FORMAT})
        )
    return expected


def dumps(value: Any, ensure_ascii: bool = False) -> bytes:
    # surrogatepass: a lone surrogate becomes the (invalid UTF-8) bytes a
    # hostile client could send, instead of an error in the test itself.
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


# --- frame strategies ---------------------------------------------------------------------


def _field_value(field: Field) -> st.SearchStrategy[Any]:
    if field.nullable:
        return st.one_of(st.none(), field.kind.valid())
    return field.kind.valid()


@st.composite
def valid_frames(draw: Callable[..., Any], frame_type: str | None = None) -> dict[str, Any]:
    """A frame every field of which is acceptable; optional fields present or not."""
    if frame_type is None:
        frame_type = draw(st.sampled_from(FRAME_TYPES))
    frame: dict[str, Any] = {"type": frame_type}
    for field in SPECS[frame_type]:
        if field.required or draw(st.booleans()):
            frame[field.name] = draw(_field_value(field))
    return frame


unknown_fields = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in FIELD_NAMES and k != "type"),
    json_values,
    max_size=3,
)


def bad_value(field: Field) -> st.SearchStrategy[Any]:
    """A value the field must refuse (never null for a nullable field)."""
    strategy = st.one_of(field.kind.invalid(), operator_objects)
    if not field.nullable:
        strategy = st.one_of(strategy, st.none())
    return strategy.filter(lambda v: not field.accepts(v))


@st.composite
def frames_with_one_bad_field(draw: Callable[..., Any]) -> tuple[dict[str, Any], Field]:
    frame_type = draw(st.sampled_from(FRAME_TYPES))
    frame = draw(valid_frames(frame_type))
    field = draw(st.sampled_from(SPECS[frame_type]))
    frame[field.name] = draw(bad_value(field))
    return frame, field


@st.composite
def frames_missing_a_required_field(draw: Callable[..., Any]) -> dict[str, Any]:
    frame_type = draw(st.sampled_from([t for t in FRAME_TYPES if _required(t)]))
    frame = draw(valid_frames(frame_type))
    del frame[draw(st.sampled_from(_required(frame_type))).name]
    return frame


def _required(frame_type: str) -> list[Field]:
    return [f for f in SPECS[frame_type] if f.required]


_ALL_FIELDS = {f.name: f for fields in SPECS.values() for f in fields}


@st.composite
def protocol_like_objects(draw: Callable[..., Any]) -> dict[str, Any]:
    """Valid frames put through a few random edits: the inputs that sit on the boundaries."""
    frame = draw(valid_frames())
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["bad", "random", "delete", "unknown", "retype", "move"]))
        if edit == "bad":
            field = _ALL_FIELDS[draw(st.sampled_from(FIELD_NAMES))]
            frame[field.name] = draw(bad_value(field))
        elif edit == "random":
            frame[draw(st.sampled_from(FIELD_NAMES))] = draw(json_values)
        elif edit == "delete" and frame:
            del frame[draw(st.sampled_from(sorted(frame)))]
        elif edit == "unknown":
            frame.update(draw(unknown_fields))
        elif edit == "retype":
            frame["type"] = draw(
                st.one_of(
                    st.sampled_from(FRAME_TYPES),
                    st.text(max_size=24),
                    st.sampled_from([t.upper() for t in FRAME_TYPES] + ["sendMessage", ""]),
                    json_values,
                    operator_objects,
                )
            )
        elif edit == "move":
            # A valid field of one frame type sent in another: ignored or wrong.
            other = draw(valid_frames())
            frame.update({k: v for k, v in other.items() if k != "type"})
    return frame


@st.composite
def garbled_frames(draw: Callable[..., Any]) -> bytes:
    """A valid frame with one random splice of (valid UTF-8) text: insert, cut or overwrite.

    Spliced as text: cutting bytes could split a character into invalid UTF-8,
    which ``test_invalid_utf8_inside_a_string_is_invalid_format`` covers.
    """
    data = dumps(draw(valid_frames())).decode("utf-8", "surrogatepass")
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 8)))
    patch = draw(
        st.one_of(
            st.text(max_size=6),
            st.sampled_from([*'{}[],:"\\ ', "null", "true", "1e999", "-0", "\\u0000"]),
        )
    )
    return (data[:start] + patch + data[end:]).encode("utf-8", "surrogatepass")


# Invalid UTF-8: stray continuation bytes, truncated sequences, overlong
# encodings, UTF-16 surrogates, code points past U+10FFFF, bytes never used.
INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xc3",
    b"\xe2\x82",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x9f\x98",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


invalid_utf8 = st.one_of(
    st.sampled_from(INVALID_UTF8),
    st.binary(min_size=1, max_size=12)
    .map(lambda b: b.replace(b'"', b"").replace(b"\\", b""))
    .filter(lambda b: not _is_utf8(b)),
)

_MARK = "\x00@fuzz@\x00"
_MARK_JSON = json.dumps(_MARK)[1:-1].encode()


@st.composite
def frames_with_invalid_utf8_in_a_string(draw: Callable[..., Any]) -> bytes:
    """A valid frame whose ``type`` or one string value carries invalid UTF-8.

    (Invalid UTF-8 in an *unknown* key is skipped with the key, like any unknown
    field, so it is not part of this property.)
    """
    frame = draw(valid_frames())
    where = draw(st.sampled_from(["type", "value"]))
    if where == "type":
        frame["type"] = frame["type"][:1] + _MARK + frame["type"][1:]
    else:
        strings = [k for k, v in frame.items() if isinstance(v, str) and k != "type"]
        key = draw(st.sampled_from([*strings, "requestId"]))
        frame[key] = str(frame.get(key) or "") + _MARK
    return dumps(frame).replace(_MARK_JSON, draw(invalid_utf8), 1)


@st.composite
def frames_with_invalid_utf8_between_tokens(draw: Callable[..., Any]) -> bytes:
    """Invalid UTF-8 outside any string: before or after the object, or just inside its braces."""
    data = dumps(draw(valid_frames()))
    at = draw(st.sampled_from([0, 1, len(data) - 1, len(data)]))
    return data[:at] + draw(invalid_utf8) + data[at:]
