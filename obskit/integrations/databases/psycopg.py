"""psycopg (3): every ``execute``/``executemany`` of a cursor — sync or async, client-
or server-side, and so ``Connection.execute`` — is one database call
(:mod:`obskit._db.call`).

psycopg's cursor classes are Python classes: their public ``execute`` and
``executemany`` methods are wrapped in place (``psycopg.Cursor``, ``AsyncCursor``,
``ServerCursor``, ``AsyncServerCursor``; ``ClientCursor``, ``RawCursor`` and
subclasses of any of them inherit it), whatever ``cursor_factory`` or ``row_factory``
made the cursor. Not recorded: ``Cursor.stream()`` and ``copy()``. In pipeline mode
a call measures the time to queue the query, not the server's answer.
"""

from __future__ import annotations

import weakref
from types import ModuleType
from typing import Any

import wrapt

from obskit._db import call as _call
from obskit._db.query_text import as_text
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks

NAME = "psycopg"
SYSTEM = "postgresql"


def patch(module: ModuleType) -> None:
    """Wrap the cursors' ``execute``/``executemany`` in ``module`` (``psycopg``)."""
    wrapt.wrap_function_wrapper(module.Cursor, "execute", _execute)
    wrapt.wrap_function_wrapper(module.Cursor, "executemany", _execute)
    wrapt.wrap_function_wrapper(module.ServerCursor, "execute", _execute)
    wrapt.wrap_function_wrapper(module.AsyncCursor, "execute", _execute_async)
    wrapt.wrap_function_wrapper(module.AsyncCursor, "executemany", _execute_async)
    wrapt.wrap_function_wrapper(module.AsyncServerCursor, "execute", _execute_async)


def _begin(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _call.DbCall | None:
    if not library_hooks.enabled(NAME) or _call.current() is not None:
        return None
    try:
        sql = as_text(args[0] if args else kwargs.get("query"), cursor)
        if sql is None:
            return None
        return _call.begin(target(cursor.connection), sql)
    except Exception as error:
        _internal_errors.report("db.psycopg", error)
        return None


def _execute(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _call.run(_begin(instance, args, kwargs), wrapped, *args, **kwargs)


async def _execute_async(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return await _call.run_async(_begin(instance, args, kwargs), wrapped, *args, **kwargs)


#: Each connection's target, made once (a connection's server does not change).
_targets: weakref.WeakKeyDictionary[Any, _call.Target] = weakref.WeakKeyDictionary()


def target(connection: Any) -> _call.Target:
    """The :class:`~obskit._db.call.Target` of a psycopg connection."""
    found = _targets.get(connection)
    if found is None:
        found = _targets[connection] = _call.Target(SYSTEM, _call.postgresql_where(connection))
    return found
