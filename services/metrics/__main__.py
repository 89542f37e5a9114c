"""``python -m services.metrics``: run the cluster metrics service."""

from services.metrics.app import create_app
from shared.cli import load_settings
from shared.web import run_service

settings = load_settings("metrics")
run_service(create_app(settings), settings, settings.metrics_port)
