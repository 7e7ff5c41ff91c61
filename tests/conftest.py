"""Shared fixtures: a clean environment and a clean obskit for every test, real receivers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import obskit
from tests.receivers import BlackHole, OtlpGrpcReceiver, OtlpHttpReceiver


@pytest.fixture(autouse=True)
def _clean_obskit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Strip OTEL_*/OBSKIT_* from the environment and shut obskit down after the test."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OBSKIT_")):
            monkeypatch.delenv(name)
    yield
    obskit.shutdown(timeout=5)


@pytest.fixture
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()
