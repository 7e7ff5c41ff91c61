"""Database spans for Django: every SQL query inside a traced request becomes a child
span, and every query is timed in ``db_client_operation_duration_seconds``.

Installed on each connection through ``connection.execute_wrappers`` (for new
connections through the ``connection_created`` signal). Django passes parameters
separately from the SQL, and literals still written into raw SQL are replaced by
``?``, so ``db.query.text`` never holds user data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime
from obskit._metrics.registry import ObskitHistogram, exemplar_of, observe_trusted, store

DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "oracle": "oracle.db"}
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.$])-?\d+(?:\.\d+)?(?![\w.])")
_TABLE = re.compile(
    r"^\s*(?:SELECT\b.*?\bFROM|INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[\"`\[]?([\w.]+)",
    re.IGNORECASE | re.DOTALL,
)


def sanitize(sql: str) -> str:
    """``sql`` with string and number literals replaced by ``?``."""
    return _NUMBER.sub("?", _STRING.sub("?", sql))


def operation(sql: str) -> str:
    """The SQL verb (``SELECT``, ``INSERT``, ...), upper case."""
    words = sql.lstrip().split(None, 1)
    return words[0].upper() if words else "UNKNOWN"


def _histogram() -> ObskitHistogram:
    return store().define(
        "histogram",
        ObskitHistogram,
        "db_client_operation_duration_seconds",
        "Duration of database client operations.",
        ("db_system_name", "db_operation_name"),
        None,
        buckets=DB_BUCKETS,
    )


class QueryTracer:
    """An ``execute_wrapper``: one CLIENT span and one observation per query."""

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        telemetry = _runtime._current
        if telemetry is None or telemetry.tracer is None or not telemetry.settings.db_spans:
            return execute(sql, params, many, context)
        try:
            connection = context["connection"]
            system = _SYSTEMS.get(connection.vendor, connection.vendor)
            verb = operation(sql)
            parent = trace.get_current_span()
            span = None
            if parent.get_span_context().is_valid:
                table = _TABLE.match(sql)
                attributes = {
                    "db.system.name": system,
                    "db.namespace": str(connection.settings_dict.get("NAME") or ""),
                    "db.operation.name": verb,
                    "db.query.text": sanitize(sql),
                }
                if table:
                    attributes["db.collection.name"] = table.group(1)
                name = f"{verb} {table.group(1)}" if table else verb
                span = telemetry.tracer.start_span(
                    name, kind=SpanKind.CLIENT, attributes=attributes
                )
            started = time.perf_counter()
        except Exception as error:
            _internal_errors.report("django.db", error)
            return execute(sql, params, many, context)
        try:
            return execute(sql, params, many, context)
        except BaseException as error:
            if span is not None:
                span.record_exception(error, escaped=True)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            try:
                elapsed = time.perf_counter() - started
                exemplar = exemplar_of(span)
                if span is not None:
                    span.end()
                observe_trusted(_histogram().labels(system, verb), elapsed, exemplar)
            except Exception as error:
                _internal_errors.report("django.db", error)


_tracer = QueryTracer()


def _attach(connection: Any, **_: Any) -> None:
    if _tracer not in connection.execute_wrappers:
        connection.execute_wrappers.append(_tracer)


def install() -> None:
    """Trace queries on every current and future connection (idempotent)."""
    connection_created.connect(_attach, dispatch_uid="obskit.db")
    for connection in connections.all(initialized_only=True):
        _attach(connection)
