"""The optional standalone ``/metrics`` server started by ``init(metrics_port=...)``."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

_log = logging.getLogger("obskit")


class MetricsServer:
    """A prometheus-client HTTP server on a daemon thread, serving one registry."""

    def __init__(self, server: Any, thread: threading.Thread, addr: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port = port

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start(addr: str, port: int, registry: CollectorRegistry) -> MetricsServer | None:
    """Serve ``registry`` on ``addr:port``; on failure (port in use) log once, return None."""
    try:
        server, thread = start_http_server(port, addr, registry)
    except OSError as error:
        _log.warning(
            "obskit: cannot serve /metrics on %s:%d (%s); the app runs on without it",
            addr,
            port,
            error,
        )
        return None
    return MetricsServer(server, thread, addr, port)
