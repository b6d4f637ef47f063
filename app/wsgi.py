"""WSGI entry for a shared server: ``GRADSCOPE_RUNS=/data/runs gunicorn app.wsgi:server``.

It serves only; no demo is trained here (its progress still shows when ``gradscope-dashboard
--demo`` trains one in the same folder).
"""

import os
from pathlib import Path

from .errors import AppError
from .server import create_app

RUNS = Path(os.environ.get("GRADSCOPE_RUNS", "runs")).expanduser()
if RUNS.exists() and not RUNS.is_dir():
    raise AppError(f"GRADSCOPE_RUNS={str(RUNS)!r} is a file; give a folder of runs")

application = create_app(RUNS)
server = application.server
