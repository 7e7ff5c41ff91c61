"""Public functions that reach into the signal modules only when called.

They live here, not in the modules they call, so that ``import obskit`` does not
import structlog or OpenTelemetry (see ``docs/architecture.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.util.types import AttributeValue
    from starlette.applications import Starlette

    from obskit._logs.pipeline import Logger
    from obskit._metrics.registry import ObskitCounter, ObskitGauge, ObskitHistogram
    from obskit._traces.decorator import span as SpanBlock

P = ParamSpec("P")
R = TypeVar("R")
StarletteApp = TypeVar("StarletteApp", bound="Starlette")


def get_logger(name: str | None = None) -> Logger:
    """Return a structlog logger whose lines carry the trace context and obskit's fields.

    Works before ``init()`` (JSON on stdout at INFO until then) and follows
    re-initialisation. Key/values passed to a call become fields of the line.

    Args:
        name: The ``logger`` field; default: the calling module's ``__name__``.
    """
    from obskit._logs.pipeline import get_logger as make

    if name is None:
        name = str(sys._getframe(1).f_globals.get("__name__", "root"))
    return make(name)


def bind(**fields: Any) -> None:
    """Bind ``fields`` to every log line written later in this context (thread/task).

    Integrations clear them at the start of each request; see ``obskit.context``.
    """
    import structlog.contextvars

    structlog.contextvars.bind_contextvars(**fields)


def unbind(*keys: str) -> None:
    """Remove bound fields by name (missing names are ignored)."""
    import structlog.contextvars

    structlog.contextvars.unbind_contextvars(*keys)


# --- metrics --------------------------------------------------------------------


def counter(
    name: str,
    documentation: str = "",
    labelnames: Sequence[str] = (),
    *,
    max_series: int | None = None,
) -> ObskitCounter:
    """A prometheus-client Counter in obskit's registry (the same one if asked again).

    Args:
        name: Prometheus name; ``_total`` is added on exposition if missing.
        documentation: The HELP text.
        labelnames: Label names; values go to ``.labels(...)``.
        max_series: Cap on distinct label sets (default: ``metrics_max_series``).

    Raises:
        ConfigError: if ``name`` is already defined with another type or labels.
    """
    from obskit._metrics.registry import ObskitCounter, store

    return store().define("counter", ObskitCounter, name, documentation, labelnames, max_series)


def histogram(
    name: str,
    documentation: str = "",
    labelnames: Sequence[str] = (),
    *,
    buckets: Sequence[float] | None = None,
    max_series: int | None = None,
) -> ObskitHistogram:
    """A prometheus-client Histogram in obskit's registry, with automatic trace exemplars.

    ``observe()`` inside a sampled span attaches its ``trace_id``/``span_id``.

    Args:
        buckets: Upper bounds in the metric's unit (default: ``histogram_buckets``).

    Raises:
        ConfigError: if ``name`` is already defined with another type or labels.
    """
    from obskit._metrics.registry import ObskitHistogram, store

    metrics = store()
    bounds = tuple(buckets) if buckets is not None else metrics.buckets
    return metrics.define(
        "histogram", ObskitHistogram, name, documentation, labelnames, max_series, buckets=bounds
    )


def gauge(
    name: str,
    documentation: str = "",
    labelnames: Sequence[str] = (),
    *,
    max_series: int | None = None,
    multiprocess_mode: str = "livesum",
) -> ObskitGauge:
    """A prometheus-client Gauge in obskit's registry (the same one if asked again).

    Args:
        multiprocess_mode: How workers' values combine under gunicorn's multiprocess
            metrics: ``livesum`` (default: the sum over live workers), ``livemax``,
            ``livemin``, ``sum``/``max``/``min`` (dead workers included), ``mostrecent``
            or ``all`` (one series per worker, with a ``pid`` label).

    Raises:
        ConfigError: if ``name`` is already defined with another type or labels.
    """
    from obskit._metrics.registry import ObskitGauge, store

    return store().define(
        "gauge",
        ObskitGauge,
        name,
        documentation,
        labelnames,
        max_series,
        multiprocess_mode=multiprocess_mode,
    )


def metrics_wsgi_app() -> Callable[..., Any]:
    """A WSGI app serving obskit's registry (OpenMetrics with exemplars when asked, gzip)."""
    from obskit._metrics.exposition import make_wsgi_app
    from obskit._metrics.registry import store

    return make_wsgi_app(store().exposition())


def metrics_asgi_app() -> Callable[..., Any]:
    """An ASGI app serving obskit's registry (OpenMetrics with exemplars when asked, gzip)."""
    from obskit._metrics.exposition import make_asgi_app
    from obskit._metrics.registry import store

    return make_asgi_app(store().exposition())


# --- tracing --------------------------------------------------------------------


@overload
def traced(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def traced(
    *,
    name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    record_exception: bool = True,
    span: bool = True,
    histogram: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(fn: Any = None, /, **options: Any) -> Any:
    """Give each call a span and a latency histogram observation (see ``docs/traced.md``).

    Bare (``@obskit.traced``) or with options (``@obskit.traced(name=...)``); for sync,
    async, generator and async-generator functions and methods. Options: ``name``,
    ``attributes``, ``record_exception`` (default True), ``span`` (False: histogram
    only), ``histogram`` (False: span only). An exception is ``outcome="error"``;
    asyncio's ``CancelledError`` is ``outcome="cancelled"``, not an error.
    """
    from obskit._traces.decorator import traced as implementation

    if fn is not None:
        return implementation(fn, **options)
    return implementation(**options)


def span(name: str, /, **attributes: AttributeValue) -> SpanBlock:
    """A manual span for a ``with``/``async with`` block, or a decorator.

    ``with obskit.span("load-cart", cart_id=7) as s:`` yields the OpenTelemetry span.
    An attribute value of a type span attributes do not have (a mapping, any other
    object) is recorded as its text, as ``@traced(attributes=...)`` records it.
    """
    from obskit._traces.decorator import span as implementation

    return implementation(name, **attributes)


# --- integrations ---------------------------------------------------------------


@overload
def instrument_asgi(
    app: StarletteApp, *, route: Callable[[Any], str | None] | None = None
) -> StarletteApp: ...


@overload
def instrument_asgi(
    app: Callable[..., Awaitable[None]], *, route: Callable[[Any], str | None] | None = None
) -> Callable[..., Awaitable[None]]: ...


def instrument_asgi(app: Any, *, route: Callable[[Any], str | None] | None = None) -> Any:
    """Instrument an ASGI 3 app: server spans, RED metrics, access log, WebSocket spans.

    Starlette and FastAPI apps are instrumented in place and returned; any other app is
    returned wrapped (serve what this returns). See
    ``obskit.integrations.asgi.instrument_asgi()`` (and ``docs/asgi.md``).
    """
    from obskit.integrations.asgi import instrument_asgi as implementation

    return implementation(app, route=route)


def instrument_flask(app: Flask) -> Flask:
    """Instrument a Flask app: server spans, RED metrics, access log, ``/metrics``.

    See ``obskit.integrations.flask.instrument_flask()`` (and ``docs/flask.md``).
    """
    from obskit.integrations.flask import instrument_flask as implementation

    return implementation(app)
