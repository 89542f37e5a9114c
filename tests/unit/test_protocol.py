from __future__ import annotations

import msgspec
import pytest

from shared.protocol import (
    CLIENT_FRAME_TYPES,
    INVALID_FORMAT,
    Conversation,
    FrameError,
    Message,
    MessageAck,
    SendMessage,
    Sync,
    decode_client_frame,
    encode,
    error_frame,
)


def test_send_message_defaults() -> None:
    frame = decode_client_frame(b'{"type":"send_message","conversationId":"c","content":"hi"}')
    assert isinstance(frame, SendMessage)
    assert frame.content_type == "text" and frame.client_message_id is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe", "INVALID_FORMAT"),
        (b"", "INVALID_FORMAT"),
        (b"null", "INVALID_FORMAT"),
        (b'{"type": null}', "INVALID_FORMAT"),
        (b'{"type": "nope"}', "UNKNOWN_MESSAGE_TYPE"),
        (b'{"type": "sync", "conversations": []}', "INVALID_MESSAGE"),
        (b'{"type": "sync", "conversations": {"c": -1}}', "INVALID_MESSAGE"),
        (b'{"type": "send_message", "conversationId": "", "content": "x"}', "INVALID_MESSAGE"),
        (b'{"type": "ack_queued"}', "INVALID_MESSAGE"),
    ],
)
def test_error_classification(raw: bytes, code: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_client_frame(raw)
    assert info.value.code == code


def test_request_id_is_kept_only_when_valid() -> None:
    with pytest.raises(FrameError) as info:
        decode_client_frame(b'{"type": "nope", "requestId": "' + b"x" * 65 + b'"}')
    assert info.value.request_id is None
    with pytest.raises(FrameError) as info:
        decode_client_frame(b'{"type": "nope", "requestId": "ok"}')
    assert info.value.request_id == "ok"


def test_unknown_fields_are_ignored() -> None:
    frame = decode_client_frame(b'{"type": "ping", "future": {"x": 1}}')
    assert type(frame).__name__ == "Ping"


def test_sync_frame() -> None:
    frame = decode_client_frame(b'{"type": "sync", "conversations": {"a": 3, "b": 0}}')
    assert isinstance(frame, Sync) and frame.conversations == {"a": 3, "b": 0}


def test_every_protocol_request_type_is_known() -> None:
    assert {
        "send_message", "typing_indicator", "read_receipt", "fetch_history",
        "create_conversation", "list_conversations", "subscribe_presence",
        "unsubscribe_presence", "ack_queued", "sync", "ping",
    } == CLIENT_FRAME_TYPES  # fmt: skip


def test_server_frames_use_camel_case_and_omit_absent_optionals() -> None:
    message = Message(
        id="m",
        conversation_id="c",
        seq=1,
        sender_id="a",
        content="x",
        content_type="text",
        sent_at=5,
    )
    decoded = msgspec.json.decode(encode(MessageAck(message=message, request_id="r")))
    assert decoded == {
        "type": "message_ack",
        "requestId": "r",
        "message": {
            "id": "m", "conversationId": "c", "seq": 1, "senderId": "a",
            "content": "x", "contentType": "text", "sentAt": 5,
        },
    }  # fmt: skip
    conv = msgspec.json.decode(
        encode(Conversation(id="c", participant_ids=["a"], created_at=1, last_seq=0))
    )
    assert conv["lastSeq"] == 0 and "title" not in conv


def test_error_frame_shape() -> None:
    decoded = msgspec.json.decode(error_frame("RATE_LIMITED", "slow down", "r1", 1500))
    assert decoded == {
        "type": "error", "code": "RATE_LIMITED", "message": "slow down",
        "requestId": "r1", "retryAfterMs": 1500,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "request_id"),
    [
        # Valid JSON, but a string escapes a lone surrogate: still matched to its request.
        (rb'{"type":"typing_indicator","conversationId":"\ud859","requestId":"r1"}', "r1"),
        (rb'{"type":"ping","requestId":"\ud859"}', None),  # an id that cannot be echoed
        (b'{"type":"typing_indicator","conversationId":"\xed\xa1\x99","requestId":"r1"}', None),
        (b'{"type":"ping","x":NaN,"requestId":"r1"}', None),  # not JSON
        # Invalid UTF-8 in fields the protocol does not define (msgspec skips
        # them unchecked): the frame is still not UTF-8 text.
        (b'{"type":"ping","requestId":"r1","x":"\xff"}', None),
        (b'{"type":"ping","requestId":"r1","x\xed\xbf\xbf":1}', None),
        (b'{"type":"ping","requestId":"r1","x":["\xed\xa1\x99"]}', None),
    ],
)
def test_frame_with_unusable_strings_is_invalid_format(data: bytes, request_id: str | None) -> None:
    with pytest.raises(FrameError) as info:
        decode_client_frame(data)
    assert info.value.code == INVALID_FORMAT
    assert info.value.request_id == request_id


@pytest.mark.parametrize("depth", [10, 500, 990, 5000])
def test_deep_frame_with_a_surrogate_is_an_error_not_a_crash(depth: int) -> None:
    nested = "[" * depth + '"\\ud800"' + "]" * depth
    with pytest.raises(FrameError) as info:
        decode_client_frame(f'{{"type":"ping","requestId":"r1","x":{nested}}}'.encode())
    assert info.value.code == INVALID_FORMAT
    assert info.value.request_id in ("r1", None)  # echoed where Python's json could read it
