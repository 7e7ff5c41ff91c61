"""Instrumentation of third-party libraries, switched on by ``init()`` when they are
imported — before ``init()`` or after.

Each :class:`Instrumentation` names a library the way OpenTelemetry's instrumentations
do (``requests``, ``httpx``, ``sqlite3``, ...; so ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
means the same here), the module whose import triggers it, and where its ``patch``
function lives (imported only when the library is). :func:`install` registers a
post-import hook (wrapt's) for each one: a module already imported is patched at once,
one imported later when its import finishes. ``import obskit`` patches nothing.

Patches stay for the life of the process (undoing them would race calls in flight).
Each patched call asks :func:`enabled` first — a set lookup — and passes straight
through when obskit is shut down or the setting ``disabled_instrumentations`` names
the library. A patch that fails is reported as an internal error and leaves the
library as it was; it never fails the user's import (outside strict mode).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType

from obskit._lifecycle import internal_errors as _internal_errors

_log = logging.getLogger("obskit")


@dataclass(frozen=True)
class Instrumentation:
    """One library obskit instruments itself."""

    #: OpenTelemetry's name for it (what ``disabled_instrumentations`` lists).
    name: str
    #: The module whose import installs the patch.
    module: str
    #: ``"package.module:function"``: ``function(module)`` patches the library.
    patch: str


_CLIENTS = "obskit.integrations.http_clients"
_DATABASES = "obskit.integrations.databases"
#: Every instrumentation obskit ships, in the order they are installed.
KNOWN: tuple[Instrumentation, ...] = (
    Instrumentation("requests", "requests", f"{_CLIENTS}.requests:patch"),
    Instrumentation("httpx", "httpx", f"{_CLIENTS}.httpx:patch"),
    Instrumentation("urllib3", "urllib3", f"{_CLIENTS}.urllib3:patch"),
    Instrumentation("urllib", "urllib.request", f"{_CLIENTS}.urllib_request:patch"),
    Instrumentation("aiohttp-client", "aiohttp", f"{_CLIENTS}.aiohttp:patch"),
    Instrumentation("sqlite3", "sqlite3", f"{_DATABASES}.sqlite3:patch"),
    Instrumentation("psycopg", "psycopg", f"{_DATABASES}.psycopg:patch"),
    Instrumentation("psycopg2", "psycopg2", f"{_DATABASES}.psycopg2:patch"),
    Instrumentation("sqlalchemy", "sqlalchemy", f"{_DATABASES}.sqlalchemy:patch"),
    Instrumentation("celery", "celery", "obskit.integrations.celery:patch"),
)

#: Names switched on now (empty before ``init()`` and after ``shutdown()``).
_on: frozenset[str] = frozenset()
_hooked: set[str] = set()
_patched: set[str] = set()


def enabled(name: str) -> bool:
    """Whether the patched calls of instrumentation ``name`` record anything now."""
    return name in _on


def install(disabled: Iterable[str], known: Iterable[Instrumentation] | None = None) -> None:
    """Switch on every known instrumentation ``disabled`` does not name (patching each
    library now if it is imported, else when it is)."""
    global _on
    import wrapt

    off = set(disabled)
    wanted = [item for item in (KNOWN if known is None else known) if item.name not in off]
    _on = frozenset(item.name for item in wanted)
    for item in wanted:
        if item.name not in _hooked:
            _hooked.add(item.name)
            wrapt.register_post_import_hook(_hook(item), item.module)


def uninstall() -> None:
    """Switch every instrumentation off (the patches pass calls straight through)."""
    global _on
    _on = frozenset()


def _hook(item: Instrumentation) -> Callable[[ModuleType], None]:
    def patch_when_imported(module: ModuleType) -> None:
        if item.name in _patched:
            return
        _patched.add(item.name)
        try:
            where, function = item.patch.split(":")
            getattr(importlib.import_module(where), function)(module)
        except Exception as error:  # never fail the user's import (unless strict)
            _internal_errors.report(f"instrumentation.{item.name}", error)

    return patch_when_imported


def patched() -> frozenset[str]:
    """Names of the instrumentations whose library has been patched in this process."""
    return frozenset(_patched)
