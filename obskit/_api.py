"""Public functions that reach into the signal modules only when called.

They live here, not in the modules they call, so that ``import obskit`` does not
import structlog or OpenTelemetry (see ``docs/architecture.md``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obskit._logs import Logger


def get_logger(name: str | None = None) -> Logger:
    """Return a structlog logger whose lines carry the trace context and obskit's fields.

    Works before ``init()`` (JSON on stdout at INFO until then) and follows
    re-initialisation. Key/values passed to a call become fields of the line.

    Args:
        name: The ``logger`` field; default: the calling module's ``__name__``.
    """
    from obskit._logs import get_logger as make

    if name is None:
        name = str(sys._getframe(1).f_globals.get("__name__", "root"))
    return make(name)


def bind(**fields: Any) -> None:
    """Bind ``fields`` to every log line written later in this context (thread/task).

    Integrations clear them at the start of each request; see :mod:`obskit.context`.
    """
    import structlog.contextvars

    structlog.contextvars.bind_contextvars(**fields)


def unbind(*keys: str) -> None:
    """Remove bound fields by name (missing names are ignored)."""
    import structlog.contextvars

    structlog.contextvars.unbind_contextvars(*keys)
