"""Database spans for Django: every SQL query inside a traced request becomes a child
span, and every query is timed in ``db_client_operation_duration_seconds``.

Installed on each connection through ``connection.execute_wrappers`` (for new
connections through the ``connection_created`` signal). Django passes parameters
separately from the SQL, and literals still written into raw SQL are replaced by
``?``, so ``db.query.text`` never holds user data. The span and the observation are
made by :mod:`obskit._db.call`, which also tells an instrumented driver underneath
(sqlite3, psycopg, psycopg2) to pass the query straight through: one span per query.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created

from obskit._db import call as _call
from obskit._db.query_text import operation, sanitize
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._metrics.registry import ObskitHistogram

__all__ = ["QueryTracer", "install", "operation", "sanitize"]

DB_BUCKETS = _call.BUCKETS


def _histogram() -> ObskitHistogram:
    """The histogram Django's queries feed (the one every database layer feeds)."""
    return _call.duration_histogram()


#: Each Django connection's target (Django keeps one connection object per alias and
#: thread, for the thread's life).
_targets: weakref.WeakKeyDictionary[Any, _call.Target] = weakref.WeakKeyDictionary()


def _target(connection: Any) -> _call.Target:
    """The :class:`~obskit._db.call.Target` of a Django connection: ``db.system.name``
    from its vendor, ``db.namespace`` and ``server.*`` from its settings."""
    found = _targets.get(connection)
    if found is None:
        settings = connection.settings_dict
        where: dict[str, Any] = {"db.namespace": str(settings.get("NAME") or "")}
        if connection.vendor != "sqlite":
            host, port = settings.get("HOST"), settings.get("PORT")
            if host:
                where["server.address"] = str(host)
            if port and str(port).isdigit():
                where["server.port"] = int(port)
        system = _call.SYSTEMS.get(connection.vendor, connection.vendor)
        found = _targets[connection] = _call.Target(system, where)
    return found


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
        call = None
        try:
            call = _call.begin(_target(context["connection"]), sql)
        except Exception as error:
            _internal_errors.report("django.db", error)
        return _call.run(call, execute, sql, params, many, context)


_tracer = QueryTracer()


def _attach(connection: Any, **_: Any) -> None:
    if _tracer not in connection.execute_wrappers:
        connection.execute_wrappers.append(_tracer)


def install() -> None:
    """Trace queries on every current and future connection (idempotent)."""
    connection_created.connect(_attach, dispatch_uid="obskit.db")
    for connection in connections.all(initialized_only=True):
        _attach(connection)
