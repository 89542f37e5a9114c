"""The JSON log lines the services write (one object per line on stderr)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from shared.logging import configure_logging, get_logger
from shared.settings import Settings


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_json_lines_carry_bound_ids_fields_and_tracebacks(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    settings = Settings.from_env({"CHAT_LOG_FORMAT": "json", "CHAT_INSTANCE_ID": "gw-1"})
    configure_logging(settings, "gateway")
    log = get_logger("test")
    structlog.contextvars.bind_contextvars(connectionId="c1")
    log.info("connected", code=1000, name="Zoë", path=Path("/x"))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed")
    first, second = [json.loads(line) for line in capsysbinary.readouterr().err.splitlines()]
    assert first["event"] == "connected" and first["level"] == "info"
    assert first["service"] == "gateway" and first["instance"] == "gw-1"
    assert first["connectionId"] == "c1" and first["code"] == 1000
    assert first["name"] == "Zoë"  # UTF-8, not dropped or mangled
    assert first["path"] == repr(Path("/x"))  # no JSON type: its repr
    assert first["timestamp"].endswith("Z")
    assert second["level"] == "error"
    assert second["exception"][0]["exc_type"] == "ValueError"
    assert second["exception"][0]["exc_value"] == "boom"


def test_debug_lines_are_dropped_below_the_level(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    configure_logging(Settings.from_env({"CHAT_LOG_FORMAT": "json"}), "presence")
    get_logger("test").debug("noise")
    assert capsysbinary.readouterr().err == b""
