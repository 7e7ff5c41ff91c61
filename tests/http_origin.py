"""A real HTTP server on 127.0.0.1 for the HTTP client tests: it records what each request
carried and answers with redirects, errors, resets, slow or very large responses."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Bytes per write of a streamed response.
CHUNK = 64 * 1024
#: The longest a /slow request waits (the tests' timeouts are far shorter).
SLOW_MAX = 5.0


class Origin:
    """The server, started on a free port; ``received`` lists (path, headers) per request.

    Routes (GET, HEAD, POST; a request body is read and dropped):

    - ``/echo...``: 200, the request's headers as JSON (lower-case names);
    - ``/status/<code>``: that status, a short body;
    - ``/redirect/<n>``: 302 to ``/redirect/<n-1>``; ``/redirect/1`` to ``/echo``;
    - ``/loop``: 302 to itself, for ever;
    - ``/reset``: the connection is reset (RST) before any answer;
    - ``/slow/<seconds>``: answers after that long (at most ``SLOW_MAX``);
    - ``/bytes/<n>``: ``n`` bytes of ``x``, written ``CHUNK`` at a time;
    - ``/flaky/<key>/<k>``: 503 for the first ``k`` requests with that key, then 200.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str]]] = []
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                elif self.headers.get("Transfer-Encoding") == "chunked":
                    self._drain_chunks()
                self.do_GET()

            def _drain_chunks(self) -> None:
                for _ in range(100_000):
                    size = int(self.rfile.readline().split(b";")[0] or b"0", 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        return

            def do_GET(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                with origin._lock:
                    origin.received.append((self.path, headers))
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                route = parts[0]
                if route == "echo":
                    self._answer(200, json.dumps(headers).encode(), "application/json")
                elif route == "status":
                    self._answer(int(parts[1]), b"status")
                elif route == "redirect":
                    hops = int(parts[1])
                    self._redirect(f"/redirect/{hops - 1}" if hops > 1 else "/echo")
                elif route == "loop":
                    self._redirect("/loop")
                elif route == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                elif route == "slow":
                    time.sleep(min(float(parts[1]), SLOW_MAX))
                    self._answer(200, b"slow")
                elif route == "bytes":
                    self._stream(int(parts[1]))
                elif route == "flaky":
                    with origin._lock:
                        count = origin._failures.get(parts[1], 0)
                        origin._failures[parts[1]] = count + 1
                    self._answer(503 if count < int(parts[2]) else 200, b"flaky")
                else:
                    self._answer(404, b"no such route")

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _stream(self, size: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                block = b"x" * CHUNK
                left = size
                try:
                    while left > 0:
                        self.wfile.write(block[: min(left, CHUNK)])
                        left -= CHUNK
                except OSError:  # the client stopped reading
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-request (the hostile tests do)

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def headers_of(self, path_start: str) -> list[dict[str, str]]:
        """The headers of every request received whose path starts with ``path_start``."""
        with self._lock:
            return [headers for path, headers in self.received if path.startswith(path_start)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve() -> Iterator[Origin]:
    """An :class:`Origin` for a fixture (closed after the test)."""
    origin = Origin()
    try:
        yield origin
    finally:
        origin.close()
