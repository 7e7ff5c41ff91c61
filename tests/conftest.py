"""Shared fixtures: a clean environment and a clean obskit for every test, real receivers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit import _metrics
from tests.receivers import BlackHole, OtlpGrpcReceiver, OtlpHttpReceiver

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_obskit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Strip OTEL_*/OBSKIT_* from the environment and shut obskit down after the test."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OBSKIT_")):
            monkeypatch.delenv(name)
    yield
    obskit.shutdown(timeout=5)
    _metrics.reset_for_tests()


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


@pytest.fixture
def spans() -> Callable[..., InMemorySpanExporter]:
    """init(**settings) plus an in-memory exporter that collects obskit's finished spans."""

    def start(**settings: object) -> InMemorySpanExporter:
        handle = obskit.init(**settings)
        exporter = InMemorySpanExporter()
        assert handle.tracer_provider is not None
        handle.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        return exporter

    return start


def openmetrics() -> dict[str, Any]:
    """obskit's registry as parsed OpenMetrics families, by name."""
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = generate_latest(_metrics.store().registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}
