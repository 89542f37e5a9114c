"""A command read from a stream, with what is needed to answer it."""

from __future__ import annotations

from dataclasses import dataclass

from services.delivery import metrics
from services.delivery.outbox import Outbox
from shared.events import Command
from shared.protocol import error_frame


@dataclass(slots=True)
class Request:
    stream: str
    entry_id: bytes
    command: Command

    @property
    def request_id(self) -> str | None:
        return getattr(self.command.frame, "request_id", None)

    @property
    def request_type(self) -> str:
        return str(type(self.command.frame).__struct_config__.tag)

    def reply(self, outbox: Outbox, frame: bytes) -> None:
        """A direct reply, timed by the gateway from the request's accept time."""
        command = self.command
        outbox.reply(
            command.gateway_id,
            command.connection_id,
            frame,
            command.accepted_at,
            self.request_type,
        )

    def error(self, outbox: Outbox, code: str, message: str) -> None:
        metrics.ERRORS.labels(code=code).inc()
        self.reply(outbox, error_frame(code, message, self.request_id))
