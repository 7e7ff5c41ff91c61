"""A small real HTTP server on 127.0.0.1 that answers ``POST /ingest`` as Grafana
Pyroscope does for ``format=pprof``: the ``name`` parsed and validated by Pyroscope's
rules (its ``labelset.Parse``; series label names as Prometheus names, no duplicates, at
most 2048 bytes a value), ``from``/``until``/``sampleRate`` read, the raw body taken as
the (gzipped) pprof profile and decoded with :func:`obskit._profiles.pprof.decode`, and
the profile's sample labels (all but ``span_id``, which Pyroscope keeps apart for its
span profiles) validated as the series labels Pyroscope makes of them. An accepted
request is recorded and answered 200; a refused one 400, as Pyroscope answers.

For failure tests the server can answer every request with another ``status``, or wait
``delay`` seconds before answering (cut short when the server closes)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from obskit._profiles.pprof import decode

#: A Prometheus (legacy) label name, which Pyroscope's validation of series labels takes.
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Runes Pyroscope's ``name`` parser allows in a label name and in the service name.
NAME_LABEL = re.compile(r"[A-Za-z0-9_.]+")
SERVICE_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")
MAX_VALUE_BYTES = 2048
MAX_BODY = 64 * 2**20


@dataclass
class Ingest:
    """One accepted ``POST /ingest``."""

    app: str
    labels: dict[str, str]
    query: dict[str, str]
    #: Header names in lower case.
    headers: dict[str, str]
    profile: Any
    body: bytes = field(repr=False)


def parse_name(name: str) -> tuple[str, dict[str, str]]:
    """``app{k=v,...}`` as Pyroscope's ``labelset.Parse`` reads it: (app, labels).

    Raises:
        ValueError: a name or label name Pyroscope refuses.
    """
    state, key, value = "name", "", ""
    app = ""
    labels: dict[str, str] = {}
    for char in name + "{":
        if state == "name":
            if char == "{":
                app = value.strip()
                if not SERVICE_NAME.fullmatch(app):
                    raise ValueError(f"invalid service name: {app!r}")
                state = "tags"
            else:
                value += char
        elif state == "tags":
            if char == "}":
                state = "done"
            elif char == "=":
                state, value = "value", ""
            else:
                key += char
        elif state == "value":
            if char in ",}":
                label = key.strip()
                if label != "__name__" and not NAME_LABEL.fullmatch(label):
                    raise ValueError(f"invalid label name: {label!r}")
                labels[label] = value.strip()
                state, key = "tags", ""
            else:
                value += char
    return app, labels


def validate_series_labels(labels: dict[str, str]) -> None:
    """Pyroscope's checks of a series' labels (``validation.ValidateLabels``).

    Raises:
        ValueError: the labels Pyroscope would refuse.
    """
    for name, value in labels.items():
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(f"invalid label name {name!r}")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise ValueError(f"label value too long: {name}")


def sample_labels(profile: Any) -> list[dict[str, str]]:
    """Each sample's string labels, by key."""
    table = list(profile.string_table)
    return [{table[label.key]: table[label.str] for label in s.label} for s in profile.sample]


def window_counts(profile: Any) -> dict[tuple[Any, ...], int]:
    """A decoded profile's samples as a window's ``counts``: ``(stack, labels)`` (stack
    innermost first, frames ``(function, file, line)``; labels sorted) -> samples."""
    table = list(profile.string_table)
    functions = {f.id: (table[f.name], table[f.filename]) for f in profile.function}
    frames = {
        location.id: (*functions[location.line[0].function_id], location.line[0].line)
        for location in profile.location
    }
    counts: dict[tuple[Any, ...], int] = {}
    for sample in profile.sample:
        stack = tuple(frames[location_id] for location_id in sample.location_id)
        labels = tuple(sorted((table[x.key], table[x.str]) for x in sample.label))
        counts[(stack, labels)] = counts.get((stack, labels), 0) + sample.value[0]
    return counts


class PyroscopeServer:
    """The server, listening on 127.0.0.1 at ``url`` until :meth:`close`."""

    def __init__(self) -> None:
        self.received: list[Ingest] = []
        self.refused: list[str] = []
        #: The status every request gets instead (None: answer as Pyroscope).
        self.status: int | None = None
        #: Seconds to wait before answering.
        self.delay = 0.0
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY))
                if server.delay:
                    server._released.wait(server.delay)
                if server.status is not None:
                    self._answer(server.status, b"forced status")
                    return
                try:
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    ingest = server.ingest(self.path, headers, body)
                except ValueError as error:
                    server.refused.append(str(error))
                    self._answer(400, str(error).encode())
                    return
                server.received.append(ingest)
                self._answer(200, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def ingest(self, path: str, headers: dict[str, str], body: bytes) -> Ingest:
        """What Pyroscope makes of one request to ``path``.

        Raises:
            ValueError: Pyroscope would refuse the request.
        """
        parts = urlsplit(path)
        if parts.path != "/ingest":
            raise ValueError(f"no such path: {parts.path}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if query.get("format") != "pprof":
            raise ValueError(f"this server reads format=pprof only, not {query.get('format')}")
        for number in ("from", "until", "sampleRate"):
            if not query.get(number, "").isdigit():
                raise ValueError(f"{number} is not a number of seconds: {query.get(number)}")
        app, labels = parse_name(query.get("name", ""))
        series = {key: value for key, value in labels.items() if value}
        series["service_name"] = app
        validate_series_labels(series)
        try:
            profile = decode(body)
        except Exception as error:
            raise ValueError(f"not a pprof profile: {error!r}") from error
        for sample in sample_labels(profile):
            sample.pop("span_id", None)
            duplicated = set(sample) & set(series)
            if duplicated:
                raise ValueError(f"duplicate label names {sorted(duplicated)}")
            validate_series_labels(sample)
        return Ingest(app, labels, query, headers, profile, body)


def serve() -> Iterator[PyroscopeServer]:
    """A running server for a fixture (closed after the test)."""
    server = PyroscopeServer()
    try:
        yield server
    finally:
        server.close()
