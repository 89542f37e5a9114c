from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.delivery.offline import next_id, valid_cursor
from shared import keys
from shared.push import decode_push, encode_push
from shared.settings import Settings, SettingsError


def test_partition_is_stable_and_in_range() -> None:
    # crc32, not hash(): the same in every process, on every run.
    assert keys.command_partition("conversation-1", 8) == keys.command_partition(
        "conversation-1", 8
    )
    assert {keys.command_partition(f"c{i}", 8) for i in range(200)} == set(range(8))
    assert keys.command_partition("abc", 8) == 2  # crc32("abc") = 0x352441C2


def test_keys_of_one_user_share_a_hash_tag() -> None:
    tagged = [
        keys.user_connections_key("u1"),
        keys.user_tombstones_key("u1"),
        keys.user_last_seen_key("u1"),
        keys.offline_queue_key("u1"),
        keys.offline_overflow_key("u1"),
    ]
    assert all("{user:u1}" in k for k in tagged)
    assert keys.lease_key("commands:3").endswith("{commands:3}")
    assert keys.fence_key("commands:3").startswith("lease:{commands:3}")


def test_push_envelope_round_trip() -> None:
    frame = b'{"type":"message","message":{"content":"a\\nb\\tc"}}'
    assert decode_push(encode_push("conn-1", frame, 1234.5, "send_message")) == (
        "conn-1",
        1234.5,
        "send_message",
        frame,
        b"",
    )
    assert decode_push(encode_push("", frame)) == ("", None, "", frame, b"")
    # The sender's ack on the push to its own channel: escaped tabs and
    # newlines in either frame (msgspec never writes raw ones) stay inside it.
    ack = msgspec.json.encode({"type": "message_ack", "message": {"content": "x\ty\nz"}})
    assert b"\t" not in ack and b"\n" not in ack
    push = decode_push(encode_push("conn-1", frame, 1.5, "send_message", ack))
    assert push == ("conn-1", 1.5, "send_message", frame, ack)
    # The envelope a delivery service without replies writes still reads.
    assert decode_push(b"conn-1\t\t\n" + frame) == ("conn-1", None, "", frame, b"")


def test_settings_from_env_and_validation() -> None:
    settings = Settings.from_env({"CHAT_GATEWAY_PORT": "9000", "CHAT_DEV_MODE": "yes"})
    assert settings.gateway_port == 9000 and settings.dev_mode is True
    assert settings.instance_id
    with pytest.raises(SettingsError, match="CHAT_GATEWAY_PORT"):
        Settings.from_env({"CHAT_GATEWAY_PORT": "http"})
    with pytest.raises(SettingsError, match="CHAT_JWT_PUBLIC_KEY"):
        Settings.from_env({"CHAT_JWT_ALGORITHM": "RS256"})
    with pytest.raises(SettingsError, match="CHAT_DEV_MODE"):
        Settings.from_env({"CHAT_DEV_MODE": "maybe"})
    with pytest.raises(SettingsError, match="CHAT_JWT_SECRET"):
        Settings.from_env({}).require_jwt()
    # A retired variable is refused by name instead of silently doing nothing.
    with pytest.raises(
        SettingsError, match=r"CHAT_SEND_QUEUE_MAX_BYTES.*CHAT_SEND_BUFFER_MAX_BYTES"
    ):
        Settings.from_env({"CHAT_SEND_QUEUE_MAX_BYTES": "1024"})


def test_redis_credentials_and_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-")
    files = {
        "CHAT_REDIS_TLS_CA_FILE": str(ca),
        "CHAT_REDIS_TLS_CERT_FILE": str(cert),
        "CHAT_REDIS_TLS_KEY_FILE": str(key),
    }
    cluster = {"CHAT_REDIS_CLUSTER_NODES": "10.0.0.1:6379", "CHAT_REDIS_CLUSTER_TLS": "1"}
    assert Settings.from_env({**files, **cluster}).redis_options() == {
        "ssl_ca_certs": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    standalone = Settings.from_env({**files, "CHAT_REDIS_URL": "rediss://redis:6380/0"})
    assert standalone.redis_options()["ssl_ca_certs"] == str(ca)
    assert Settings.from_env({}).redis_options() == {}
    credentials = Settings.from_env({"CHAT_REDIS_USERNAME": "chat", "CHAT_REDIS_PASSWORD": "pw"})
    assert credentials.redis_options() == {"username": "chat", "password": "pw"}
    with pytest.raises(SettingsError, match="CHAT_REDIS_USERNAME needs CHAT_REDIS_PASSWORD"):
        Settings.from_env({"CHAT_REDIS_USERNAME": "chat"})
    # Files without TLS would be silently ignored: refused instead.
    with pytest.raises(SettingsError, match="rediss://"):
        Settings.from_env(files)
    with pytest.raises(SettingsError, match="CHAT_REDIS_CLUSTER_TLS"):
        Settings.from_env({**files, "CHAT_REDIS_CLUSTER_NODES": "10.0.0.1:6379"})
    with pytest.raises(SettingsError, match="CHAT_REDIS_CLUSTER_NODES"):
        Settings.from_env({"CHAT_REDIS_CLUSTER_TLS": "1"})
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env({**cluster, "CHAT_REDIS_TLS_CERT_FILE": str(cert)})
    with pytest.raises(SettingsError, match="CHAT_REDIS_TLS_CA_FILE: no such file"):
        Settings.from_env({**cluster, "CHAT_REDIS_TLS_CA_FILE": str(tmp_path / "missing")})


def test_queue_cursor_helpers() -> None:
    assert next_id("1700000000000-4") == "1700000000000-5"
    assert valid_cursor("1700000000000-0")
    assert not valid_cursor("-")
    assert not valid_cursor("12-x")
    assert not valid_cursor("1" * 50 + "-1")


def test_undecodable_stream_entries_are_counted_not_silent() -> None:
    from shared.events import ConnClosed, decode_conn_event, encode_event
    from shared.streams import UNDECODABLE, decode_entries

    good = encode_event(ConnClosed(gateway_id="g", connection_id="c", user_id="u", at=1))
    before = UNDECODABLE.labels(stream="s")._value.get()
    decoded = decode_entries("s", [(b"1-0", b"\xc1garbage"), (b"2-0", good)], decode_conn_event)
    assert [entry_id for entry_id, _ in decoded] == [b"2-0"]
    assert UNDECODABLE.labels(stream="s")._value.get() == before + 1


def test_pubsub_endpoint_follows_the_redis_url() -> None:
    import redis.asyncio as redis_asyncio

    from shared.pubsub_conn import Endpoint

    def endpoint(url: str) -> Endpoint:
        pool = redis_asyncio.Redis.from_url(url).connection_pool
        return Endpoint.from_kwargs(
            {**pool.connection_kwargs, "connection_class": pool.connection_class}
        )

    tls = endpoint("rediss://:pw@example:6380/0")
    assert (tls.host, tls.port, tls.password) == ("example", 6380, "pw")
    assert tls.ssl_context is not None
    plain = endpoint("redis://u:pw@h:1/0")
    assert (plain.username, plain.password, plain.ssl_context) == ("u", "pw", None)


def test_label_cache_resolves_each_child_once() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from shared.labels import LabelCache

    registry = CollectorRegistry()
    counter = Counter("probe_total", "probe", ["type"], registry=registry)
    cache = LabelCache(counter, "type")
    cache["a"].inc()
    cache["a"].inc(2)
    cache["b"].inc()
    assert cache["a"] is counter.labels(type="a")
    assert registry.get_sample_value("probe_total", {"type": "a"}) == 3
    assert registry.get_sample_value("probe_total", {"type": "b"}) == 1


def test_a_public_key_file_without_a_usable_key_stops_the_gateway_at_start(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    good, bad = tmp_path / "good.pem", tmp_path / "bad.pem"
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    good.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    env = {"CHAT_JWT_ALGORITHM": "ES256"}
    Settings.from_env({**env, "CHAT_JWT_PUBLIC_KEY": str(good)}).require_jwt()
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(SettingsError, match=r"CHAT_JWT_PUBLIC_KEY=.*no usable ES256"):
            Settings.from_env({**env, "CHAT_JWT_PUBLIC_KEY": str(path)}).require_jwt()
