"""OpenTelemetry's contrib instrumentations (redis, grpc, kafka, botocore, ...) switched
on by ``init()``, so their spans flow through obskit's pipeline.

The setting ``contrib_instrumentations`` names installed instrumentations by their
entry point in the ``opentelemetry_instrumentor`` group (the names
``opentelemetry-instrument`` and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` use), or
``all``. :func:`check` (from the settings check, the one place that raises) refuses a
name that is not installed, and a library obskit instruments itself unless obskit's
own instrumentation of it is disabled: both at once would record every call twice.
:func:`switch_on` (from ``init()``) instruments each one with obskit's tracer provider,
which follows every later ``init()`` and ``shutdown()``; an instrumentation that fails
or whose library version it does not support is logged and left off, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from obskit._lifecycle import internal_errors as _internal_errors
from obskit.exceptions import ConfigError

GROUP = "opentelemetry_instrumentor"
#: Libraries obskit instruments itself (by OpenTelemetry's names), and ``logging``,
#: whose contrib instrumentation would reformat the records obskit's pipeline writes.
NATIVE = frozenset(
    {
        "flask",
        "django",
        "logging",
        "requests",
        "httpx",
        "urllib3",
        "urllib",
        "aiohttp-client",
        "sqlite3",
        "psycopg",
        "psycopg2",
        "sqlalchemy",
        "celery",
    }
)

_log = logging.getLogger("obskit")
_switched_on: set[str] = set()


def installed() -> dict[str, Any]:
    """The installed contrib instrumentations: name -> entry point."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=GROUP)}


def chosen(names: Iterable[str], disabled: Iterable[str], available: Iterable[str]) -> list[str]:
    """The names ``init()`` switches on: ``all`` expands to every available one obskit
    does not instrument itself; ``disabled`` ones stay off (a library obskit instruments
    itself is named here only when obskit's own is disabled: :func:`check`)."""
    off = set(disabled)
    wanted = list(names)
    if "all" in wanted:
        wanted = sorted(name for name in available if name not in NATIVE)
    return [name for name in wanted if name in NATIVE or name not in off]


def check(names: tuple[str, ...], disabled: tuple[str, ...], source: str) -> None:
    """Raise a ConfigError for a name that is not installed or that obskit instruments
    itself (unless obskit's own is disabled)."""
    if not names or names == ("all",):
        return
    available = installed()
    for name in names:
        if name == "all":
            raise ConfigError(
                "contrib_instrumentations", ",".join(names), source, "`all` alone, or names"
            )
        if name in NATIVE and name not in disabled:
            raise ConfigError(
                "contrib_instrumentations",
                name,
                source,
                "an instrumentation obskit does not provide itself",
                f"obskit instruments {name} already; to use OpenTelemetry's instead, also"
                f" list it in disabled_instrumentations",
            )
        if name not in available:
            listed = ", ".join(sorted(available)) or "none is installed"
            raise ConfigError(
                "contrib_instrumentations",
                name,
                source,
                f"an installed OpenTelemetry instrumentation ({listed})",
                f"pip install opentelemetry-instrumentation-{name.replace('_', '-')}"
                " -c <(obskit constraints)",
            )


def switch_on(names: tuple[str, ...], disabled: tuple[str, ...], provider: Any) -> None:
    """Instrument each chosen contrib instrumentation once per process (never raises)."""
    if not names:
        return
    try:
        available = installed()
    except Exception as error:
        _internal_errors.report("contrib", error)
        return
    for name in chosen(names, disabled, available):
        if name in _switched_on or name not in available:
            continue
        _switched_on.add(name)
        try:
            instrumentor = available[name].load()()
            instrumentor.instrument(tracer_provider=provider)
            if not instrumentor.is_instrumented_by_opentelemetry:
                _log.warning(
                    "obskit: OpenTelemetry's %s instrumentation did not switch on: %s",
                    name,
                    _conflict(instrumentor) or "see its own log line",
                )
        except Exception as error:
            _log.warning("obskit: OpenTelemetry's %s instrumentation failed: %r", name, error)
            _internal_errors.report("contrib", error)


def _conflict(instrumentor: Any) -> str | None:
    """Why an instrumentation refused to switch on (its library's version), if known."""
    try:
        from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
    except Exception:
        return None
    return str(conflict) if conflict else None
