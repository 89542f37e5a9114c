"""A command read from a stream, with what is needed to answer it."""

from __future__ import annotations

from dataclasses import dataclass

from services.delivery import metrics
from services.delivery.outbox import Outbox
from shared.events import Command


@dataclass(slots=True)
class Request:
    stream: str
    entry_id: bytes
    command: Command

    @property
    def request_id(self) -> str | None:
        return getattr(self.command.frame, "request_id", None)

    def reply(self, outbox: Outbox, frame: bytes) -> None:
        outbox.reply(
            self.command.gateway_id, self.command.connection_id, frame, self.command.accepted_at
        )

    def error(self, outbox: Outbox, code: str, message: str) -> None:
        metrics.ERRORS.labels(code=code).inc()
        outbox.error(
            self.command.gateway_id, self.command.connection_id, code, message, self.request_id
        )
