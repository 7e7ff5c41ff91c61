"""obskit's dedicated ``/metrics`` server: the registry on ``metrics_port`` (9464 by
default), apart from the app's port, served from a daemon thread.

- Port taken (another process of the same app serves it: a development reloader's
  process, a second worker of a server run without obskit's hooks): one warning, then a
  quiet retry every :data:`RETRY_SECONDS`; the port is served as soon as it is free.
- A development reloader's watching process (Werkzeug's and Django's
  ``restart_with_reloader`` on its main thread) serves nothing: the process it restarts
  has the app and its metrics. It is checked for during the first
  :data:`RELOADER_WATCH_SECONDS`.
- Under obskit's gunicorn hooks the master runs one server process for the pod
  (:mod:`obskit._metrics.pod_server`) and sets :data:`served_by_master`; ``init()`` then
  starts no server in the master or the workers.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.registry import CollectorRegistry

_log = logging.getLogger("obskit")

#: Seconds between two attempts to bind a port another process holds.
RETRY_SECONDS = 2.0
#: How long after starting a server it checks for a development reloader's process.
RELOADER_WATCH_SECONDS = 10.0
#: Frames walked up the main thread's stack at most, looking for a reloader.
MAX_FRAMES = 200
#: The modules whose ``restart_with_reloader`` keeps a process watching another.
_RELOADERS = frozenset({"werkzeug._reloader", "django.utils.autoreload"})

#: Set by :mod:`obskit.integrations.gunicorn`: the pod's ``/metrics`` is served by the
#: gunicorn master's server process; ``None`` otherwise.
master: MasterServer | None = None
#: Environment variables a development reloader sets in the process it restarts.
_RELOADED = ("WERKZEUG_RUN_MAIN", "RUN_MAIN")


class MasterServer(Protocol):
    """What obskit's gunicorn hooks say about the pod's server process."""

    def address(self) -> tuple[str, int] | None:
        """Where it serves (from the environment gunicorn runs in); None: port 0."""

    def started(self) -> bool:
        """Whether the master's ``on_starting`` hook started it."""


def bind_address(value: str) -> str:
    """The address to bind for ``metrics_addr``: ``auto`` is all interfaces in
    Kubernetes (``KUBERNETES_SERVICE_HOST`` set: Prometheus scrapes the pod's IP), the
    loopback interface elsewhere."""
    if value != "auto":
        return value
    return "0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per request, daemon threads (as prometheus-client's server)."""

    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (as prometheus-client's server)."""


def start_http_server(port: int, addr: str, registry: CollectorRegistry) -> tuple[Any, Any]:
    """prometheus-client's ``start_http_server`` (no TLS), serving obskit's fast exposition,
    and ``/debug/dump`` to loopback clients (:mod:`obskit._dumps.endpoint`)."""
    from obskit._dumps.endpoint import with_dump_path
    from obskit._metrics.exposition import make_wsgi_app

    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = next(iter(infos))

    class Server(_ThreadingServer):
        address_family = family

    app = with_dump_path(make_wsgi_app(registry))  # /debug/dump: loopback clients only
    httpd = make_server(str(sockaddr[0]), port, app, Server, handler_class=_SilentHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="obskit-metrics")
    thread.start()
    return httpd, thread


def in_reloader_parent() -> bool:
    """Whether the main thread is a development reloader's watching loop."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    for _ in range(MAX_FRAMES):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "restart_with_reloader" and frame.f_globals.get("__name__") in (
            _RELOADERS
        ):
            return True
        frame = frame.f_back
    return False


class MetricsServer:
    """``/metrics`` on ``addr:port``, bound now or as soon as the port is free."""

    def __init__(self, addr: str, port: int, registry: CollectorRegistry) -> None:
        self.addr = addr
        self.port = port
        self._registry = registry
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._httpd: Any = None
        self._thread: threading.Thread | None = None
        self._retry = False
        self._warned = False
        self._keeper: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        """Whether the port is bound and served by this process."""
        return self._httpd is not None

    def start(self, watch_reloader: bool = True) -> None:
        """Bind now (the port is up when this returns), and keep trying if it is taken."""
        self._bind()
        if self._retry or watch_reloader:
            self._keeper = threading.Thread(
                target=self._keep, args=(watch_reloader,), daemon=True, name="obskit-metrics-keeper"
            )
            self._keeper.start()

    def _bind(self) -> None:
        with self._lock:
            if self._stopped.is_set() or self._httpd is not None:
                return
            try:
                self._httpd, self._thread = start_http_server(self.port, self.addr, self._registry)
                self._retry = False
            except OSError as error:
                taken = error.errno == errno.EADDRINUSE
                self._retry = taken
                if not self._warned:
                    self._warned = True
                    # Expected: a reloaded process waits for its watcher to let the port
                    # go; a worker of a multiprocess server leaves it to the one that
                    # serves every worker's metrics.
                    expected = taken and (
                        any(os.environ.get(v) == "true" for v in _RELOADED)
                        or bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
                    )
                    (_log.debug if expected else _log.warning)(
                        "obskit: cannot serve /metrics on %s:%d (%s); %s",
                        self.addr,
                        self.port,
                        error,
                        "another process holds the port; obskit serves it once it is free"
                        if taken
                        else "the app runs on without it",
                    )

    def _keep(self, watch_reloader: bool) -> None:
        until = time.monotonic() + RELOADER_WATCH_SECONDS if watch_reloader else 0.0
        while True:
            watching = time.monotonic() < until
            if self._stopped.wait(0.5 if watching else RETRY_SECONDS):
                return
            if watching and in_reloader_parent():
                _log.debug("obskit: a reloader's watching process; it leaves /metrics to the app")
                self._stop_serving()
                return
            if self._retry:
                self._bind()
            elif not watching:
                return

    def _stop_serving(self) -> None:
        with self._lock:
            self._stopped.set()
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)

    def stop(self) -> None:
        """Stop serving (and trying to) and release the port."""
        self._stop_serving()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)


def start(addr: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on ``addr:port`` (see :class:`MetricsServer`)."""
    server = MetricsServer(addr, port, registry)
    server.start()
    return server
