"""The optional standalone ``/metrics`` server started by ``init(metrics_port=...)``."""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.registry import CollectorRegistry

_log = logging.getLogger("obskit")


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per request, daemon threads (as prometheus-client's server)."""

    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (as prometheus-client's server)."""


def start_http_server(port: int, addr: str, registry: CollectorRegistry) -> tuple[Any, Any]:
    """prometheus-client's ``start_http_server`` (no TLS), serving obskit's fast exposition."""
    from obskit._metrics.exposition import make_wsgi_app

    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = next(iter(infos))

    class Server(_ThreadingServer):
        address_family = family

    httpd = make_server(
        str(sockaddr[0]), port, make_wsgi_app(registry), Server, handler_class=_SilentHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


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
