"""Scenario 5: exceptions injected into obskit's hooks. In production mode the app's
responses are identical to obskit disabled and each fault is counted; in strict mode
the same fault surfaces, so a test suite sees it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import obskit
from examples.flask_app import create_app
from obskit._fast import spans as _spans
from obskit._http import server_request as _server_request
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._logs import pipeline as _pipeline
from obskit._metrics import registry as _registry

PATHS = ["/", "/post/3", "/missing", "/unavailable", "/stream?chunks=2&pause=0", "/fail"]


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


def _inject_span_start(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    monkeypatch.setattr(handle.tracer, "start_span", _boom)
    # obskit's own spans start on the fast path when the SDK configuration allows it.
    monkeypatch.setattr(_spans.FastTracer, "start", _boom)
    monkeypatch.setattr(_spans.FastTracer, "start_current", _boom)


def _inject_observe(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    monkeypatch.setattr(_registry, "_histogram_observe", _boom)


def _inject_log_processor(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    shared = _pipeline.pipeline()
    for chain in (shared.structlog_chain, shared.record_chain):
        monkeypatch.setitem(_ListItem(chain), 0, _boom)  # type: ignore[arg-type]


class _ListItem(dict):  # type: ignore[type-arg]
    """Lets monkeypatch.setitem replace (and restore) an element of a list in place."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(enumerate(items))
        self._items = items

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        self._items[key] = value


def _inject_attribute_set(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    from opentelemetry.sdk.trace import Span as SdkSpan

    monkeypatch.setattr(SdkSpan, "set_attribute", _boom)


def _inject_span_processor(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    """A span processor (the user's: obskit's own never raise) failing in on_end."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Failing(SpanProcessor):
        def on_end(self, span: Any) -> None:
            _boom()

    multi = handle.tracer_provider._active_span_processor
    monkeypatch.setattr(multi, "_span_processors", (*multi._span_processors, Failing()))


def _inject_middleware(monkeypatch: pytest.MonkeyPatch, handle: Any) -> None:
    monkeypatch.setattr(_server_request.ServerRequest, "response_headers", _boom)


FAULTS: dict[str, Callable[[pytest.MonkeyPatch, Any], None]] = {
    "span start": _inject_span_start,
    "histogram observe": _inject_observe,
    "log processor": _inject_log_processor,
    "attribute set": _inject_attribute_set,
    "span processor": _inject_span_processor,
    "middleware": _inject_middleware,
}


def _responses(app: Any) -> list[tuple[int, bytes]]:
    client = app.test_client()
    return [
        (response.status_code, response.data)
        for response in (client.get(path, buffered=True) for path in PATHS)
    ]


@pytest.fixture
def baseline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """The example app's responses with obskit disabled."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    responses = _responses(create_app())
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    obskit.shutdown()
    return responses


@pytest.mark.parametrize("fault", list(FAULTS))
def test_production_mode_responses_match_disabled_and_faults_are_counted(
    fault: str, baseline: list[tuple[int, bytes]], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A fault in the hook changes no response; it is counted as an internal error."""
    app = create_app(log_format="json")
    before = sum(_internal_errors.internal_errors().values())
    FAULTS[fault](monkeypatch, obskit._lifecycle.runtime.current())
    responses = _responses(app)
    monkeypatch.undo()
    assert responses == baseline
    assert sum(_internal_errors.internal_errors().values()) > before
    assert "Calling end() on an ended span" not in capsys.readouterr().out  # ended once


@pytest.mark.parametrize("fault", list(FAULTS))
def test_strict_mode_surfaces_each_fault(
    fault: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """With strict=True the injected fault raises out of obskit (the request fails)."""
    app = create_app(log_format="json", strict=True)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    FAULTS[fault](monkeypatch, obskit._lifecycle.runtime.current())
    client = app.test_client()

    def serve_two_requests() -> None:
        for path in PATHS[:2]:
            client.get(path, buffered=True)

    with pytest.raises(RuntimeError, match="injected fault"):
        serve_two_requests()
    monkeypatch.undo()
