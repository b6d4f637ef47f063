"""WSGI entry for a shared server: ``GRADSCOPE_RUNS=/data/runs gunicorn app.wsgi:server``."""

import os

from .server import create_app

application = create_app(os.environ.get("GRADSCOPE_RUNS", "runs"))
server = application.server
