"""A fake OTLP/HTTP collector whose behaviour can be switched while the app runs:
up, black hole, 429/503 with Retry-After, connection reset, truncated reply, and
down (port closed). It decodes the real protobuf the exporter sends."""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.receivers import _Store, accept_export, serve_grpc


class FaultyCollector(_Store):
    """OTLP/HTTP on a fixed 127.0.0.1 port, with a switchable failure ``mode``."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "up"
        self.status = 503
        self.retry_after = "1"
        self.attempts: dict[str, int] = {}
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = collector.mode
                collector.attempts[mode] = collector.attempts.get(mode, 0) + 1
                if mode == "blackhole":
                    collector._release.wait(120)
                    return
                if mode == "reset":
                    # SO_LINGER 0: close() sends RST instead of FIN. The socket closes
                    # only once rfile (a makefile reference) is closed too.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.rfile.close()
                    self.connection.close()
                    return
                if mode == "status":
                    self.send_response(collector.status)
                    self.send_header("Retry-After", collector.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b"\x0a\x05")
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                accept_export(self, collector, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        """Listen (again) on the same port."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: connections are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self._release.set()
        self.stop()


class FaultyGrpcCollector:
    """A real grpcio OTLP trace service on 127.0.0.1 that answers every export with
    the status ``code`` (``grpc.StatusCode``)."""

    def __init__(self, code: Any) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.code = code
        self.attempts = 0
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                collector.attempts += 1
                context.abort(collector.code, "injected by the test collector")

        self._server, self.port = serve_grpc(Service())
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(grace=None).wait()
