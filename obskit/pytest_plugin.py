"""obskit's pytest plugin (registered as a ``pytest11`` entry point).

Provides the ``obskit_capture`` fixture: obskit initialised for the test in strict
mode (so obskit's own internal errors fail the test instead of being swallowed),
with in-memory spans, captured log lines and metric helpers; see
``obskit.testing``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obskit.testing import Capture, capture


@pytest.fixture
def obskit_capture() -> Iterator[Capture]:
    """obskit for this test: spans, logs and metrics to assert on (strict mode)."""
    with capture() as captured:
        yield captured
