"""The one tracer provider obskit installs in OpenTelemetry's global slot.

OpenTelemetry lets the global provider be set once per process. obskit sets this
switchable provider once and swaps the SDK provider *inside* it on every
``init()``/``shutdown()``, so re-initialisation never logs "Overriding of current
TracerProvider is not allowed" and tracers that libraries cached at import time
follow the swap.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import Attributes


class SwitchableTracerProvider(trace.TracerProvider):
    """A tracer provider that delegates to a replaceable inner provider."""

    def __init__(self) -> None:
        self._inner: trace.TracerProvider = trace.NoOpTracerProvider()
        #: Bumped on every swap; tracers compare it to know their delegate is stale.
        self.generation = 0

    @property
    def inner(self) -> trace.TracerProvider:
        """The provider that currently makes the spans."""
        return self._inner

    def switch(self, inner: trace.TracerProvider) -> None:
        """Make ``inner`` the provider behind every tracer handed out so far."""
        self._inner = inner
        self.generation += 1

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        return _SwitchingTracer(
            self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )


class _SwitchingTracer(trace.Tracer):
    """A tracer that fetches a fresh delegate when its provider has switched."""

    def __init__(self, provider: SwitchableTracerProvider, key: tuple[Any, ...]) -> None:
        self._provider = provider
        self._key = key
        self._generation = -1
        self._delegate: trace.Tracer = trace.NoOpTracer()

    def _current(self) -> trace.Tracer:
        generation = self._provider.generation
        if generation != self._generation:
            # Delegate first, generation second: a racing thread that sees the new
            # generation also sees the new delegate.
            self._delegate = self._provider.inner.get_tracer(*self._key)
            self._generation = generation
        return self._delegate

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> AbstractContextManager[trace.Span]:
        # The delegate returns its own context manager; hand it through untouched.
        return self._current().start_as_current_span(*args, **kwargs)
