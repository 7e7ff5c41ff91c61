"""obskit: correlated logs, Prometheus metrics and OpenTelemetry traces from one ``init()``.

Importing obskit does no work: no environment reads, threads, metric registrations
or framework imports. Everything starts in ``init()``.
"""

from obskit import context
from obskit._lifecycle.lazy_api import (
    bind,
    counter,
    gauge,
    get_logger,
    histogram,
    instrument_asgi,
    instrument_flask,
    metrics_asgi_app,
    metrics_wsgi_app,
    span,
    traced,
    unbind,
)
from obskit._lifecycle.runtime import Telemetry, init, shutdown
from obskit._version import __version__
from obskit.exceptions import ConfigError, ObskitError

__all__ = [
    "ConfigError",
    "ObskitError",
    "Telemetry",
    "__version__",
    "bind",
    "context",
    "counter",
    "gauge",
    "get_logger",
    "histogram",
    "init",
    "instrument_asgi",
    "instrument_flask",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "shutdown",
    "span",
    "traced",
    "unbind",
]
