"""Which accelerators are on, and why: one decision per accelerator, one switch for all.

An accelerator is speed that comes from knowing a dependency's internals. Each one
lives in a module of this package and registers here with:

- a *check* that returns ``None`` when the installed dependencies have the layout
  the accelerator was written for, or the reason it must stay off;
- an *apply* callback that turns the accelerator's module-level state on or off,
  so its hot path reads one module global, never this registry.

:func:`decide` runs at ``init()`` with the ``fast_paths`` setting; before that, and
with ``fast_paths=False`` / ``OBSKIT_FAST_PATHS=0``, every accelerator is off and
its public-API path serves the same contract. :func:`statuses` is what ``obskit
doctor`` prints and what ``obskit_fast_path_enabled{path}`` exposes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Status", "decide", "enabled", "register", "statuses"]

_log = logging.getLogger("obskit")

#: Reason shown for every accelerator turned off by the switch.
SWITCHED_OFF = "turned off by fast_paths=False / OBSKIT_FAST_PATHS=0"
#: Reason shown before ``init()`` decided.
UNDECIDED = "not decided yet: init() has not run"


@dataclass(frozen=True)
class Status:
    """One accelerator's state: its name, whether it is on, and why."""

    path: str
    enabled: bool
    reason: str


@dataclass
class _Accelerator:
    check: Callable[[], str | None]
    apply: Callable[[bool], None]
    status: Status


_lock = threading.Lock()
_registered: dict[str, _Accelerator] = {}


def register(path: str, check: Callable[[], str | None], apply: Callable[[bool], None]) -> None:
    """Declare the accelerator ``path`` (idempotent: a re-import replaces it, turned off)."""
    with _lock:
        _registered[path] = _Accelerator(check, apply, Status(path, False, UNDECIDED))
    apply(False)


def decide(allowed: bool) -> list[Status]:
    """Run every check once and turn each accelerator on or off; return the new states.

    A check that raises counts as a reason to stay off: an accelerator can only ever
    be lost to a dependency change, never break ``init()``.
    """
    _load_all()
    turned_off: list[Status] = []
    with _lock:
        for path, accelerator in sorted(_registered.items()):
            if not allowed:
                reason: str | None = SWITCHED_OFF
            else:
                try:
                    reason = accelerator.check()
                except Exception as error:
                    reason = f"its check failed: {type(error).__name__}: {error}"
            on = reason is None
            try:
                accelerator.apply(on)
            except Exception as error:  # pragma: no cover - apply only assigns globals
                on, reason = False, f"could not be applied: {error!r}"
                accelerator.apply(False)
            accelerator.status = Status(path, on, "on" if on else str(reason))
            if not on and allowed:
                turned_off.append(accelerator.status)
    for status in turned_off:  # said once per init(), at debug: the app is unaffected
        _log.debug("obskit: fast path %r off: %s", status.path, status.reason)
    return statuses()


def enabled(path: str) -> bool:
    """Whether the accelerator ``path`` is on (``False`` if unknown)."""
    accelerator = _registered.get(path)
    return accelerator is not None and accelerator.status.enabled


def statuses() -> list[Status]:
    """Every registered accelerator's state, sorted by name."""
    _load_all()
    with _lock:
        return [_registered[path].status for path in sorted(_registered)]


def _load_all() -> None:
    """Import every accelerator module, so that each has registered (cheap after the first)."""
    import importlib

    from obskit._fast import MODULES

    for name in MODULES:
        importlib.import_module(name)
