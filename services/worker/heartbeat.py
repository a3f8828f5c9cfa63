"""Where the worker records that it is making progress (read by the container health check)."""

from __future__ import annotations

import tempfile
from pathlib import Path

DEFAULT_HEARTBEAT_FILE = Path(tempfile.gettempdir()) / "billing-worker.heartbeat"
