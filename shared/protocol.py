"""msgspec types for every frame of the client protocol (docs/protocol.md).

Client frames form one tagged union on ``type`` so that a single decode both
validates and dispatches. Ids are plain bounded strings: a MongoDB operator
object where an id belongs fails validation before it reaches any store.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
RequestId = Annotated[str, msgspec.Meta(max_length=64)]
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
ContentType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Title = Annotated[str, msgspec.Meta(max_length=200)]

MAX_PRESENCE_WATCH = 200
MAX_PARTICIPANTS = 100
MAX_SYNC_CONVERSATIONS = 500


class _Frame(msgspec.Struct, tag_field="type", rename="camel", omit_defaults=True, frozen=True):
    pass


# --- client -> server ------------------------------------------------------------------


class SendMessage(_Frame, tag="send_message"):
    conversation_id: Id
    content: Content
    content_type: ContentType = "text"
    client_message_id: Id | None = None
    request_id: RequestId | None = None


class TypingIndicator(_Frame, tag="typing_indicator"):
    conversation_id: Id
    is_typing: bool
    request_id: RequestId | None = None


class ReadReceipt(_Frame, tag="read_receipt"):
    message_id: Id | None = None
    conversation_id: Id | None = None
    seq: Seq | None = None
    request_id: RequestId | None = None


class FetchHistory(_Frame, tag="fetch_history"):
    conversation_id: Id
    before_seq: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    request_id: RequestId | None = None


class CreateConversation(_Frame, tag="create_conversation"):
    participant_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_PARTICIPANTS)]
    title: Title | None = None
    request_id: RequestId | None = None


class ListConversations(_Frame, tag="list_conversations"):
    request_id: RequestId | None = None


class SubscribePresence(_Frame, tag="subscribe_presence"):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_PRESENCE_WATCH)]
    request_id: RequestId | None = None


class UnsubscribePresence(_Frame, tag="unsubscribe_presence"):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_PRESENCE_WATCH)]
    request_id: RequestId | None = None


class AckQueued(_Frame, tag="ack_queued"):
    up_to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    request_id: RequestId | None = None


class Sync(_Frame, tag="sync"):
    conversations: Annotated[dict[Id, Seq], msgspec.Meta(max_length=MAX_SYNC_CONVERSATIONS)]
    request_id: RequestId | None = None


class Ping(_Frame, tag="ping"):
    request_id: RequestId | None = None


ClientFrame = (
    SendMessage
    | TypingIndicator
    | ReadReceipt
    | FetchHistory
    | CreateConversation
    | ListConversations
    | SubscribePresence
    | UnsubscribePresence
    | AckQueued
    | Sync
    | Ping
)

CLIENT_FRAME_TYPES: frozenset[str] = frozenset(
    t.__struct_config__.tag for t in ClientFrame.__args__
)

# --- shared objects ------------------------------------------------------------------------


class Message(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    content: str
    content_type: str
    sent_at: int
    client_message_id: str | None = None


class Conversation(msgspec.Struct, rename="camel", omit_defaults=True):
    id: str
    participant_ids: list[str]
    created_at: int
    last_seq: int
    title: str | None = None
    unread_count: int | None = None


class PresenceStatus(msgspec.Struct, rename="camel", omit_defaults=True):
    status: Literal["online", "offline"]
    last_seen: int | None = None


# --- server -> client ------------------------------------------------------------------------


class Connected(_Frame, tag="connected"):
    user_id: str
    connection_id: str
    server_time: int
    heartbeat_interval_ms: int


class MessageAck(_Frame, tag="message_ack"):
    message: Message
    request_id: str | None = None
    client_message_id: str | None = None


class MessagePush(_Frame, tag="message"):
    message: Message


class QueuedMessages(_Frame, tag="queued_messages"):
    messages: list[Message]
    cursor: str
    more: bool


class SyncRequired(_Frame, tag="sync_required"):
    conversation_ids: list[str]


class TypingPush(_Frame, tag="typing_indicator"):
    conversation_id: str
    user_id: str
    is_typing: bool
    timestamp: int


class ReadReceiptPush(_Frame, tag="read_receipt"):
    conversation_id: str
    user_id: str
    message_id: str
    seq: int
    read_at: int


class PresenceUpdate(_Frame, tag="presence_update"):
    user_id: str
    status: Literal["online", "offline"]
    timestamp: int
    last_seen: int | None = None


class PresenceState(_Frame, tag="presence_state"):
    users: dict[str, PresenceStatus]
    request_id: str | None = None


class ConversationFrame(_Frame, tag="conversation"):
    conversation: Conversation
    request_id: str | None = None


class Conversations(_Frame, tag="conversations"):
    conversations: list[Conversation]
    request_id: str | None = None


class History(_Frame, tag="history"):
    conversation_id: str
    messages: list[Message]
    has_more: bool
    request_id: str | None = None


class SyncComplete(_Frame, tag="sync_complete"):
    request_id: str | None = None


class Pong(_Frame, tag="pong"):
    request_id: str | None = None
    server_time: int | None = None


class SystemNotification(_Frame, tag="system_notification"):
    message: str
    level: Literal["info", "warning", "error"]
    timestamp: int


class Error(_Frame, tag="error"):
    code: str
    message: str
    request_id: str | None = None
    retry_after_ms: int | None = None


# Error codes (PROTOCOL.md).
INVALID_FORMAT = "INVALID_FORMAT"
UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
INVALID_MESSAGE = "INVALID_MESSAGE"
RATE_LIMITED = "RATE_LIMITED"
NOT_A_MEMBER = "NOT_A_MEMBER"
CONVERSATION_NOT_FOUND = "CONVERSATION_NOT_FOUND"
MESSAGE_NOT_FOUND = "MESSAGE_NOT_FOUND"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"

# Close codes.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
# Never sent in a close frame: recorded when a peer that stopped answering
# heartbeat pings is dropped without a closing handshake.
CLOSE_ABNORMAL = 1006
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_SLOW = 1013
CLOSE_TOKEN_EXPIRED = 4001


class FrameError(Exception):
    """A client frame that cannot be accepted; carries the protocol error code."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


_client_decoder = msgspec.json.Decoder(ClientFrame)
_any_decoder = msgspec.json.Decoder(Any)
_encoder = msgspec.json.Encoder()


def decode_client_frame(data: str | bytes) -> ClientFrame:
    """Decode and validate one client frame, or raise FrameError with the right code.

    The typed decode is the fast path; only a frame that fails it is decoded a
    second time, loosely, to tell which protocol error it deserves.
    """
    if isinstance(data, bytes) and not data.isascii():
        # msgspec checks the UTF-8 of the strings it keeps, not of fields it
        # skips: a frame with invalid UTF-8 in an unknown field would pass.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise _not_json(data) from None
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _classify(data, str(exc)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        # Deep nesting trips msgspec's recursion guard; invalid UTF-8 inside a
        # string (or a lone surrogate in a str) fails decoding: both are
        # frames that are not valid JSON text.
        raise _not_json(data) from None


def _classify(data: str | bytes, detail: str) -> FrameError:
    try:
        raw = _any_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return _not_json(data)
    if not isinstance(raw, dict):
        return FrameError(INVALID_FORMAT, "frame must be a JSON object")
    request_id = _echoable_request_id(raw)
    frame_type = raw.get("type")
    if not isinstance(frame_type, str):
        return FrameError(INVALID_FORMAT, "frame has no string 'type'", request_id)
    if frame_type not in CLIENT_FRAME_TYPES:
        return FrameError(
            UNKNOWN_MESSAGE_TYPE, f"unknown message type {frame_type[:64]!r}", request_id
        )
    return FrameError(INVALID_MESSAGE, detail, request_id)


def _echoable_request_id(raw: dict[str, Any]) -> str | None:
    request_id = raw.get("requestId")
    if not isinstance(request_id, str) or len(request_id) > 64 or _has_surrogate(request_id):
        return None
    return request_id


def _has_surrogate(value: Any) -> bool:
    # Iterative: a frame nested a few hundred deep must not exhaust the stack.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: not JSON


def _not_json(data: str | bytes) -> FrameError:
    """INVALID_FORMAT, echoing the requestId when only the strings were at fault.

    JSON text whose strings escape a lone surrogate (``"\\ud800"``) is not
    Unicode, so msgspec refuses the whole frame; Python's json still reads
    it, which finds the requestId so the client can match the error to its
    request. Only on this error path, for frames at most the frame limit.
    """
    try:
        # Strict UTF-8 first: json.loads would let surrogate bytes through.
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        raw = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # not UTF-8, or not JSON
        raw = None
    request_id = None
    if isinstance(raw, dict) and _has_surrogate(raw):
        request_id = _echoable_request_id(raw)
    return FrameError(INVALID_FORMAT, "frame is not valid JSON", request_id)


def encode(frame: msgspec.Struct) -> bytes:
    """Encode a server frame to JSON bytes (once; the bytes go to every socket)."""
    return _encoder.encode(frame)


def error_frame(
    code: str, message: str, request_id: str | None = None, retry_after_ms: int | None = None
) -> bytes:
    return encode(
        Error(code=code, message=message, request_id=request_id, retry_after_ms=retry_after_ms)
    )
