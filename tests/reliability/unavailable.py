"""Something a test needs is not on this machine: skip with the reason, but fail under
``CI=true`` (CI installs everything and runs as root), as ``tests/prometheus_server.py``
does for its binary."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip the test with ``message``; fail it instead under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
