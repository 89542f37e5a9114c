"""Entry-point helper: settings from the environment, a clear message on error."""

from __future__ import annotations

import sys

from shared.logging import configure_logging
from shared.settings import Settings, SettingsError


def load_settings(service: str) -> Settings:
    try:
        settings = Settings.from_env()
        if service == "gateway":
            settings.require_jwt()
    except SettingsError as exc:
        sys.stderr.write(f"{service}: invalid configuration: {exc}\n")
        raise SystemExit(2) from None
    configure_logging(settings, service)
    return settings
