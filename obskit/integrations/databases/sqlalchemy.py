"""SQLAlchemy 2.x: every statement an engine sends to its driver is one database call
(:mod:`obskit._db.call`), through SQLAlchemy's public event API.

Three listeners on the ``Engine`` class — so on every engine, made before ``init()`` or
after, sync or the ``sync_engine`` inside an ``AsyncEngine`` — ``before_cursor_execute``
begins the call, ``after_cursor_execute`` ends it, ``handle_error`` ends it with the
driver's exception. While it is open an instrumented driver underneath passes the
statement straight through: one span, SQLAlchemy's, which knows the dialect and the
URL's database, host and port.
"""

from __future__ import annotations

import importlib
import weakref
from types import ModuleType
from typing import Any

from obskit._db import call as _call
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "sqlalchemy"


def patch(module: ModuleType) -> None:
    """Listen to every engine's cursor executions (``module`` is ``sqlalchemy``)."""
    event = importlib.import_module(f"{module.__name__}.event")
    engine = importlib.import_module(f"{module.__name__}.engine")
    event.listen(engine.Engine, "before_cursor_execute", _before, retval=True)
    event.listen(engine.Engine, "after_cursor_execute", _after)
    event.listen(engine.Engine, "handle_error", _error)


#: id(engine) -> (a weak reference to the engine, its target): an engine's target,
#: found with one dict lookup per statement (the reference tells a reused id apart).
_targets: dict[int, tuple[weakref.ref[Any], _call.Target]] = {}


def target(engine: Any) -> _call.Target:
    """The :class:`~obskit._db.call.Target` of ``engine``: ``db.system.name`` from its
    dialect, ``db.namespace`` and ``server.*`` from its URL."""
    found = _targets.get(id(engine))
    if found is not None and found[0]() is engine:
        return found[1]
    name = engine.dialect.name
    system = _call.SYSTEMS.get(name, name)
    url = engine.url
    where: dict[str, Any] = {"db.namespace": str(url.database or "")}
    if system != "sqlite":
        if url.host:
            where["server.address"] = str(url.host)
        if url.port:
            where["server.port"] = int(url.port)
    made = _call.Target(system, where)
    key = id(engine)
    _targets[key] = (weakref.ref(engine, lambda _: _forget(key)), made)
    return made


def _forget(key: int) -> None:
    entry = _targets.get(key)
    if entry is not None and entry[0]() is None:
        del _targets[key]


def _before(
    conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> tuple[Any, Any]:
    """Begin the statement's call (a ``retval=True`` listener: hands both back as they
    came)."""
    if library_hooks.enabled(NAME):
        try:
            open_call = _call.current()
            if open_call is not None and open_call.owner is not None:
                # SQLAlchemy's own call whose end never came (no error event): end it.
                _call.end(open_call)
                open_call = None
            if open_call is None and isinstance(statement, str) and context is not None:
                _call.begin(target(conn.engine), statement, owner=context)
        except Exception as error:
            _internal_errors.report("db.sqlalchemy", error)
    return statement, parameters


def _after(
    conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
) -> None:
    open_call = _call.current()
    if open_call is not None and open_call.owner is context and context is not None:
        _call.end(open_call)


def _error(exception_context: Any) -> None:
    open_call = _call.current()
    if (
        open_call is not None
        and open_call.owner is not None
        and open_call.owner is exception_context.execution_context
    ):
        _call.end(open_call, exception_context.original_exception)
