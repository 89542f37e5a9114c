"""Presence over real gateways: multi-device, crashes, watchers, typing."""

from __future__ import annotations

import asyncio
import random
import time

import redis.asyncio as redis
import structlog.testing

from services.presence.announce import Announcer
from services.presence.state import Change, PresenceState, Transition, _rounds
from shared import keys
from shared.mongo import create_mongo, database
from shared.redis_client import create_standalone
from shared.settings import Settings
from shared.tokens import make_token
from tests.support.chat import create_conversation, uid
from tests.support.client import ChatClient
from tests.support.servers import free_port
from tests.support.stack import SECRET


async def _status(watcher: ChatClient, *users: str) -> dict[str, dict]:
    reply = await watcher.request(
        {"type": "subscribe_presence", "userIds": list(users)}, "presence_state"
    )
    assert reply["type"] == "presence_state", reply
    return reply["users"]  # type: ignore[no-any-return]


async def _eventually(check, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {result!r}")
        await asyncio.sleep(interval)


async def test_two_devices_online_until_both_close(connect, mongo, stack) -> None:
    alice = uid("alice")
    watcher = await connect(uid("watcher"))
    assert (await _status(watcher, alice))[alice]["status"] == "offline"
    phone, laptop = await connect(alice), await connect(alice)
    online = await watcher.expect("presence_update", userId=alice)
    assert online["status"] == "online" and online["timestamp"] > 0
    await phone.close()
    # Closing one device keeps the user online and publishes nothing.
    await asyncio.sleep(0.3)
    assert not [f for f in watcher.frames if f.get("type") == "presence_update"]
    assert (await _status(watcher, alice))[alice]["status"] == "online"
    await laptop.close()
    offline = await watcher.expect("presence_update", userId=alice)
    assert offline["status"] == "offline" and offline["lastSeen"] >= online["timestamp"]
    state = await _status(watcher, alice)
    assert state[alice] == {"status": "offline", "lastSeen": offline["lastSeen"]}

    async def stored() -> dict | None:
        doc = await mongo[stack.db_name].users.find_one({"_id": alice})
        return doc if doc and doc.get("lastSeen") else None

    user = await _eventually(stored)
    assert user["lastSeen"] == offline["lastSeen"] and user["name"] == alice.title()


async def test_users_recorded_once_and_renamed(connect, mongo, stack) -> None:
    """A new user is stored with its name; a reconnect under a new name renames it."""
    user = uid("renamed")
    users = mongo[stack.db_name].users

    async def named(name: str):  # type: ignore[no-untyped-def]
        doc = await users.find_one({"_id": user})
        return doc if doc and doc.get("name") == name else None

    first = await connect(user, token=make_token(user, SECRET, name="First"))
    created = (await _eventually(lambda: named("First")))["createdAt"]
    await first.close()
    again = await connect(user, token=make_token(user, SECRET, name="First"))
    await again.close()
    renamed = await connect(user, token=make_token(user, SECRET, name="Second"))
    doc = await _eventually(lambda: named("Second"))
    assert doc["createdAt"] == created  # the same document, renamed
    await renamed.close()


async def test_watchers_get_only_watched_users_and_unsubscribe_stops(connect) -> None:
    watched, other = uid("watched"), uid("other")
    watcher = await connect(uid("watcher"))
    await _status(watcher, watched)
    await connect(other)
    w = await connect(watched)
    assert (await watcher.expect("presence_update"))["userId"] == watched
    # A second watcher keeps the gateway's subscription alive, and tells us
    # when the offline update has been delivered.
    control = await connect(uid("control"))
    await _status(control, watched)
    await watcher.send({"type": "unsubscribe_presence", "userIds": [watched]})
    assert (await watcher.request({"type": "ping"}, "pong"))["type"] == "pong"
    await w.close()
    await control.expect("presence_update", userId=watched, status="offline")
    assert (await watcher.request({"type": "ping"}, "pong"))["type"] == "pong"
    assert not [f for f in watcher.frames if f.get("type") == "presence_update"], watcher.frames


async def test_typing_reaches_other_members_and_lapses(connect) -> None:
    alice, bob, carol, mallory = uid("alice"), uid("bob"), uid("carol"), uid("mallory")
    a_phone, a_laptop = await connect(alice), await connect(alice)
    b, c, m = await connect(bob), await connect(carol), await connect(mallory)
    conversation = await create_conversation(a_phone, bob, carol)
    await a_phone.send(
        {"type": "typing_indicator", "conversationId": conversation["id"], "isTyping": True}
    )
    started = time.monotonic()
    for member in (b, c):
        typing = await member.expect("typing_indicator")
        assert typing["userId"] == alice and typing["isTyping"] is True
        assert typing["conversationId"] == conversation["id"] and typing["timestamp"] > 0
    # Without a refresh the receivers get isTyping false within 6 s.
    lapsed = await b.expect("typing_indicator", timeout=8)
    assert lapsed["isTyping"] is False and time.monotonic() - started < 6.5
    assert (await c.expect("typing_indicator"))["isTyping"] is False
    # Not the typer's own devices, not non-members.
    assert not [f for f in a_laptop.frames + m.frames if f.get("type") == "typing_indicator"]
    # A non-member may not type there.
    await m.send(
        {
            "type": "typing_indicator",
            "conversationId": conversation["id"],
            "isTyping": True,
            "requestId": "t",
        }
    )
    assert (await m.expect("error"))["code"] == "NOT_A_MEMBER"


async def test_gateway_kill9_takes_its_users_offline(fresh_stack, redis_server) -> None:
    gw_a = fresh_stack.start("gateway")
    gw_b = fresh_stack.start("gateway")
    fresh_stack.start("presence")
    users = [uid("u") for _ in range(50)]
    both = users[:10]  # also connected through gateway B
    on_a = [await ChatClient.connect(gw_a.ws_url, u) for u in users]
    on_b = [await ChatClient.connect(gw_b.ws_url, u) for u in both]
    watcher = await ChatClient.connect(gw_b.ws_url, uid("watcher"))
    client = redis.Redis.from_url(fresh_stack.redis_url)
    try:

        async def online_count() -> int:
            pipe = client.pipeline(transaction=False)
            for u in users:
                pipe.hlen(keys.user_connections_key(u))
            return sum(1 for n in await pipe.execute() if n)

        assert await _eventually(lambda: _equals(online_count, 50))
        await _status(watcher, *users)
        gw_a.kill9()
        killed = time.monotonic()
        # TTL is 3 s in tests: the bound is 2 x TTL.
        assert await _eventually(lambda: _equals(online_count, len(both)), timeout=12)
        elapsed = time.monotonic() - killed
        assert elapsed < 6.5, elapsed

        def offline_updates() -> set[str]:
            return {
                f["userId"]
                for f in watcher.frames
                if f.get("type") == "presence_update" and f["status"] == "offline"
            }

        # The state changes first, the updates are published right after it.
        async def all_announced() -> bool:
            return offline_updates() == set(users) - set(both)

        assert await _eventually(all_announced, timeout=5)
        state = await _status(watcher, *users)
        assert {u for u, s in state.items() if s["status"] == "online"} == set(both)
    finally:
        for c in on_a + on_b + [watcher]:
            await c.close()
        await client.aclose()


async def _equals(fetch, expected):  # type: ignore[no-untyped-def]
    return (await fetch()) == expected


async def test_presence_restart_mid_churn_converges(fresh_stack, redis_server) -> None:
    gateway = fresh_stack.start("gateway")
    presence = fresh_stack.start("presence")
    users = [uid("churn") for _ in range(40)]
    rng = random.Random(7)
    live: dict[str, list[ChatClient]] = {u: [] for u in users}
    client = redis.Redis.from_url(fresh_stack.redis_url)
    try:
        for step in range(200):
            user = rng.choice(users)
            if live[user] and rng.random() < 0.5:
                await live[user].pop().close()
            else:
                live[user].append(await ChatClient.connect(gateway.ws_url, user))
            if step == 80:
                presence.kill9()
            if step == 140:
                presence = fresh_stack.restart(presence)
        expected = {u for u, conns in live.items() if conns}

        async def converged() -> bool:
            pipe = client.pipeline(transaction=False)
            for u in users:
                pipe.hlen(keys.user_connections_key(u))
            counts = await pipe.execute()
            online = {u for u, n in zip(users, counts, strict=True) if n}
            exact = all(n == len(live[u]) for u, n in zip(users, counts, strict=True))
            return online == expected and exact

        assert await _eventually(converged, timeout=20)
        members = {m.decode() for m in await client.smembers(keys.online_users_key())}
        assert members & set(users) == expected
    finally:
        for conns in live.values():
            for c in conns:
                await c.close()
        await client.aclose()


async def test_one_batch_applies_each_users_changes_in_their_order(redis_server) -> None:
    """Many users' opens and closes in one call: one user's in order, transitions exact."""
    client = redis.Redis.from_url(redis_server.url)
    state = PresenceState(client)
    u, v, gateway = uid("u"), uid("v"), uid("gw")

    def change(user: str, conn: str, opened: bool) -> Change:
        return Change(user, conn, gateway, opened, int(time.time() * 1000))

    try:
        changes = [
            change(u, "c1", True),  # u online
            change(v, "d1", True),  # v online
            change(u, "c2", True),
            change(u, "c1", False),
            change(u, "c2", False),  # u offline
            change(u, "c3", True),  # u online again
            change(v, "d0", False),  # closed before it was opened: a tombstone
            change(v, "d0", True),  # the late open is ignored
        ]
        # On a cluster a round's scripts run concurrently: a user's next change
        # waits for the next round.
        assert _rounds(changes) == [[0, 1], [2, 6], [3, 7], [4], [5]]
        made = await state.apply(changes)
        assert made == [True, True, False, False, True, True, False, False]
        registry = await client.hgetall(keys.gateway_connections_key(gateway))
        assert registry == {b"c3": u.encode(), b"d1": v.encode()}
        assert await client.hkeys(keys.user_connections_key(u)) == [b"c3"]
        online = await client.smismember(keys.online_users_key(), [u, v])
        assert online == [1, 1]
    finally:
        await client.aclose()


async def test_open_redone_after_its_close_stays_closed_but_a_swept_one_returns(client) -> None:
    """Connection events are delivered at least once: a presence instance that died
    before acknowledging an open has it redone, possibly after the close. That open
    must not bring the connection back. A sweep of a gateway thought dead is not
    final: the gateway, alive after all, announces its connections again."""
    state = PresenceState(client)
    u, w, gateway = uid("u"), uid("w"), uid("gw")
    now = int(time.time() * 1000)
    assert await state.apply([Change(u, "c1", gateway, True, now)]) == [True]
    assert await state.apply([Change(u, "c1", gateway, False, now + 1)]) == [True]
    assert await state.apply([Change(u, "c1", gateway, True, now)]) == [False]  # redone
    assert await client.hlen(keys.user_connections_key(u)) == 0
    assert not await client.sismember(keys.online_users_key(), u)

    assert await state.apply([Change(w, "d1", gateway, True, now)]) == [True]
    swept = Change(w, "d1", gateway, False, now + 1, for_good=False)
    assert await state.apply([swept]) == [True]
    assert await state.apply([Change(w, "d1", gateway, True, now + 2)]) == [True]  # announced
    assert await client.hkeys(keys.user_connections_key(w)) == [b"d1"]


async def test_tombstones_of_a_user_stay_bounded(client) -> None:
    state = PresenceState(client)
    u, gateway = uid("u"), uid("gw")
    now = int(time.time() * 1000)
    for i in range(300):
        await state.apply([Change(u, f"c{i}", gateway, True, now)])
        await state.apply([Change(u, f"c{i}", gateway, False, now)])
    assert 0 < await client.hlen(keys.user_tombstones_key(u)) <= 128
    # The latest close is always among them.
    assert await state.apply([Change(u, "c299", gateway, True, now)]) == [False]


async def test_watching_the_most_users_at_once_subscribes_each_and_reports_all(
    connect, stack
) -> None:
    """A full watch list in one request: every channel subscribed (the SUBSCRIBEs
    go out together), the state of each reported, a later transition relayed."""
    watched = [uid(f"w{i}") for i in range(200)]
    online = watched[::50]
    for user in online:
        await connect(user)
    watcher = await connect(uid("watcher"))
    redis_client = stack.redis_client()

    async def recorded() -> bool:
        lives = [await redis_client.hlen(keys.user_connections_key(u)) for u in online]
        return lives == [1] * len(online)

    await _eventually(recorded)
    state = await _status(watcher, *watched)
    assert len(state) == 200
    assert {u for u, s in state.items() if s["status"] == "online"} == set(online)
    counts = dict(await redis_client.pubsub_numsub(*(keys.presence_channel(u) for u in watched)))
    await redis_client.aclose()
    assert set(counts.values()) == {1}, counts  # one subscription per gateway, none missing
    last = await connect(watched[-1])
    update = await watcher.expect("presence_update", userId=watched[-1])
    assert update["status"] == "online"
    await last.close()


async def test_users_not_recorded_at_stop_are_logged(redis_server) -> None:
    """MongoDB unreachable when presence stops: the pending lastSeen writes are named."""
    port = free_port()  # nothing listens there
    settings = Settings(
        redis_url=redis_server.url,
        mongodb_uri=f"mongodb://127.0.0.1:{port}",
        mongodb_timeout_ms=300,
    )
    mongo = create_mongo(settings)
    client = create_standalone(settings)
    announcer = Announcer(client, database(mongo, settings), settings)
    announcer.start()
    try:
        await announcer.announce([Transition(uid("gone"), False, int(time.time() * 1000), None)])
        with structlog.testing.capture_logs() as logs:
            await announcer.stop()
        [line] = [e for e in logs if e["event"] == "users not recorded in MongoDB at stop"]
        assert line["pending"] == 1 and line["log_level"] == "warning"
    finally:
        await client.aclose()
        await mongo.close()
