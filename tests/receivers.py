"""Real OTLP receivers for the tests: HTTP and gRPC servers on 127.0.0.1 that decode
the protobuf the exporters send, plus a black hole that accepts and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class ReceivedSpan:
    """One decoded span with the attributes of the resource it came with."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    #: ``(name, attributes)`` of each event.
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    if field == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, field) if field else None


def decode(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    """Flatten an export request into spans."""
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    resource=resource,
                    status_code=span.status.code,
                    events=[
                        (event.name, {a.key: _value(a.value) for a in event.attributes})
                        for event in span.events
                    ],
                )


class _Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []

    def add(
        self, request: trace_service_pb2.ExportTraceServiceRequest, headers: dict[str, str]
    ) -> None:
        with self._lock:
            self.requests += 1
            self.headers.append(headers)
            self._spans.extend(decode(request))

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for_traces(
        self, trace_ids: set[str], per_trace: int, timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        """Wait until each trace in ``trace_ids`` has ``per_trace`` spans; return all spans."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            counts: dict[str, int] = {}
            for span in spans:
                counts[span.trace_id] = counts.get(span.trace_id, 0) + 1
            if all(counts.get(t, 0) >= per_trace for t in trace_ids) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans
            if len(spans) >= count:
                return spans
            time.sleep(0.02)
        return self.spans


def accept_export(handler: BaseHTTPRequestHandler, store: _Store, body: bytes) -> None:
    """Decode an OTLP/HTTP export into ``store`` and answer 200 with a protobuf reply."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    store.add(request, {k.lower(): v for k, v in handler.headers.items()})
    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/x-protobuf")
    handler.send_header("Content-Length", str(len(reply)))
    handler.end_headers()
    handler.wfile.write(reply)


class OtlpHttpReceiver(_Store):
    """An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1.

    With ``max_body_bytes``, a request whose body is larger is read, discarded and
    answered 413, as a collector with a request-body limit answers it; ``body_sizes``
    lists every body's size (refused ones too) and, with ``keep_bodies``, ``bodies``
    every accepted body.
    """

    def __init__(self, max_body_bytes: int | None = None, keep_bodies: bool = False) -> None:
        super().__init__()
        store = self
        self.max_body_bytes = max_body_bytes
        self.body_sizes: list[int] = []
        self.bodies: list[bytes] = []
        self.refused = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                store.body_sizes.append(length)
                limit = store.max_body_bytes
                if limit is not None and length > limit:
                    left = length
                    while left > 0:  # read it all, so the client reads the answer
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                    store.refused += 1
                    self.send_response(413)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(length)
                if keep_bodies:
                    store.bodies.append(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                accept_export(self, store, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_grpc(service: Any) -> tuple[Any, int]:
    """A started grpcio server on 127.0.0.1 for an OTLP trace ``service``; (server, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class OtlpGrpcReceiver(_Store):
    """An OTLP/gRPC trace receiver on 127.0.0.1 (a real grpcio server)."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                store.add(request, dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server, self.port = serve_grpc(Service())
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(grace=None).wait()


class BlackHole:
    """A TCP port that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._socket.settimeout(0.1)
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self._held.append(connection)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join()
        for connection in self._held:
            connection.close()
        self._socket.close()
