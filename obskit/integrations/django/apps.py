"""The Django app: initialise obskit from ``settings.OBSKIT`` at start-up."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.conf import settings

from obskit._lifecycle import runtime as _runtime
from obskit.exceptions import ConfigError


class ObskitConfig(AppConfig):
    """``obskit.integrations.django``: ``ready()`` runs ``obskit.init(**settings.OBSKIT)``."""

    name = "obskit.integrations.django"
    label = "obskit"
    verbose_name = "obskit"

    def ready(self) -> None:
        from obskit.integrations.django.db import install

        if _runtime.current() is None:
            options = getattr(settings, "OBSKIT", {})
            try:
                _runtime.init(**options)
            except ConfigError as error:
                # Name the settings.py key, not an init() argument.
                raise ConfigError(
                    error.setting,
                    error.value,
                    f"settings.OBSKIT[{error.setting!r}]",
                    error.allowed,
                    error.hint,
                ) from None
        install()
        for name in ("django.request", "django.server"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _RequestSummary) for f in logger.filters):
                logger.addFilter(_RequestSummary())


class _RequestSummary(logging.Filter):
    """Django logs 4xx/5xx with ``extra={"request": request}``; the request's repr shows
    the full path *with its query string*. Replace it with method and path only, so
    secrets in query strings never reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            method = getattr(request, "method", "")
            path = getattr(request, "path", "")
            record.request = f"{method} {path}".strip()
        return True
