"""``python -m services.delivery``: run one delivery worker."""

from services.delivery.app import create_app
from shared.cli import load_settings
from shared.web import run_service

settings = load_settings("delivery")
run_service(create_app(settings), settings, settings.delivery_port)
