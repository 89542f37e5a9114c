"""``python -m services.presence``: run one presence worker."""

from services.presence.app import create_app
from shared.cli import load_settings
from shared.web import run_service

settings = load_settings("presence")
run_service(create_app(settings), settings, settings.presence_port)
