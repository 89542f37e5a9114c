"""``python -m services.gateway``: run one gateway process."""

from services.gateway.app import create_app
from shared.cli import load_settings
from shared.web import run_service

settings = load_settings("gateway")
run_service(create_app(settings), settings, settings.gateway_port)
