"""What a well-behaved client does to never miss a message: dedupe + sync."""

from __future__ import annotations

import time
from typing import Any

from tests.support.client import ChatClient


def messages_in(frames: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every message carried by message / queued_messages / history frames, by id."""
    found: dict[str, dict[str, Any]] = {}
    for frame in frames:
        kind = frame.get("type")
        if kind in ("message", "message_ack"):
            found[frame["message"]["id"]] = frame["message"]
        elif kind in ("queued_messages", "history"):
            for message in frame["messages"]:
                found[message["id"]] = message
    return found


async def drain_queue(client: ChatClient, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Receive and ack every queued_messages batch; returns the batches."""
    batches = []
    while True:
        batch = await client.expect("queued_messages", timeout=timeout)
        batches.append(batch)
        await client.send({"type": "ack_queued", "upTo": batch["cursor"]})
        if not batch["more"]:
            return batches


async def sync(client: ChatClient, last_seqs: dict[str, int]) -> list[dict[str, Any]]:
    """Send sync and collect history frames until sync_complete.

    Like a real client, it asks again when no answer comes: an answer pushed
    while the gateway's subscription moves (a Redis failover) can be lost.
    """
    for attempt in range(3):
        request_id = f"sync-{time.monotonic_ns()}-{attempt}"
        await client.send({"type": "sync", "conversations": last_seqs, "requestId": request_id})
        frames = []
        try:
            while True:
                frame = await client.wait_for(_answers_to(request_id), timeout=15)
                if frame["type"] == "sync_complete":
                    return frames
                assert frame["type"] == "history", frame
                frames.append(frame)
        except TimeoutError:
            continue
    raise TimeoutError("sync was never answered")


def _answers_to(request_id: str) -> Any:
    return lambda frame: frame.get("requestId") == request_id


def last_seqs(messages: dict[str, dict[str, Any]], conversations: list[str]) -> dict[str, int]:
    """The highest contiguous seq seen per conversation (what a client syncs from)."""
    result = {}
    for cid in conversations:
        seqs = sorted(m["seq"] for m in messages.values() if m["conversationId"] == cid)
        top = 0
        for seq in seqs:
            if seq != top + 1:
                break
            top = seq
        result[cid] = top
    return result
