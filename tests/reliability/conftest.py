from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.collector import FaultyCollector


@pytest.fixture
def collector() -> Iterator[FaultyCollector]:
    faulty = FaultyCollector()
    yield faulty
    faulty.close()
