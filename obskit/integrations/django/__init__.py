"""Django integration.

``INSTALLED_APPS += ["obskit.integrations.django"]`` (its ``AppConfig.ready()`` calls
``obskit.init(**settings.OBSKIT)`` and installs the database instrumentation) and
``MIDDLEWARE = ["obskit.integrations.django.ObskitMiddleware", ...]`` (first). The
middleware is sync- and async-capable. ``metrics_view`` serves obskit's registry
from ``urls.py`` when the middleware's own ``/metrics`` is not wanted.
"""

from obskit.integrations.django.middleware import ObskitMiddleware, metrics_view

__all__ = ["ObskitMiddleware", "metrics_view"]
