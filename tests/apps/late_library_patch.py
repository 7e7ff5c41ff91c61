"""The instrumentation of :mod:`tests.apps.late_library` the import-hook tests install:
it records, per call, whether obskit says the instrumentation is on."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from obskit._lifecycle import library_hooks

calls: list[tuple[int, bool]] = []
patches: list[str] = []


def patch(module: ModuleType) -> None:
    """Wrap ``module.fetch`` (once per process)."""
    patches.append(module.__name__)
    original = module.fetch

    def fetch(value: int) -> Any:
        calls.append((value, library_hooks.enabled("late-library")))
        return original(value)

    module.fetch = fetch


def broken(module: ModuleType) -> None:
    """A patch that fails."""
    raise RuntimeError("the patch failed")
