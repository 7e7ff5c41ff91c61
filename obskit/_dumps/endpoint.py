"""``/debug/dump`` on the dedicated metrics port: a dump on request, for local clients.

``GET`` or ``POST /debug/dump`` from a loopback address (``127.0.0.0/8``, ``::1``, or
IPv4-mapped loopback) writes a dump to the log and answers with its summary (JSON: the
dump id and how many threads and tasks it holds). Any other client gets ``403``: the
metrics port is bound to all interfaces in Kubernetes, where anyone who can scrape the
pod could otherwise make it write stacks. Reach it from inside the pod
(``kubectl exec ... -- curl -s localhost:9464/debug/dump``) or through
``kubectl port-forward``, which connects from the pod's loopback.

One process (a thread server, the default): the dump is written before the answer.
Under obskit's gunicorn hooks the pod's metrics server is a process of its own: there
:func:`answer` is replaced by one that sends ``SIGUSR1`` to gunicorn's master, which
passes it to every worker (see :mod:`obskit._metrics.pod_server`); each worker writes
its dump, and the answer is ``202``.

At most one dump per :data:`MIN_SECONDS`: a request sooner is answered ``429``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MIN_SECONDS", "PATH", "answer", "in_process", "is_loopback", "with_dump_path"]

PATH = "/debug/dump"
#: Seconds between two dumps asked for over HTTP.
MIN_SECONDS = 1.0

_last = -MIN_SECONDS
_lock = threading.Lock()


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (a WSGI ``REMOTE_ADDR``) is a loopback address."""
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback
    return parsed.is_loopback


def in_process() -> tuple[str, dict[str, Any]]:
    """Write a dump of this process now: ``(status, body)``."""
    from obskit._lifecycle import runtime as _runtime

    telemetry = _runtime.current()
    if telemetry is None or telemetry.disabled or not telemetry.settings.dumps:
        return "404 Not Found", {"error": "dumps are off (the dumps setting, or no init())"}
    from obskit._dumps import dump_lines

    summary = dump_lines.write_dump("endpoint", heap=telemetry.settings.dump_heap)
    if not summary:
        return "503 Service Unavailable", {"error": "another dump is still being written"}
    return "200 OK", {**summary, "written_to": "the log (logger obskit.dumps)"}


#: What a request to :data:`PATH` does (the pod server of gunicorn replaces it).
answer: Callable[[], tuple[str, dict[str, Any]]] = in_process


def with_dump_path(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` (the ``/metrics`` WSGI app), answering :data:`PATH` itself."""

    def dump_or_metrics(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != PATH:
            return app(environ, start_response)
        status, body = _answer(environ)
        payload = (json.dumps(body) + "\n").encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return dump_or_metrics


def _answer(environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    global _last
    method = environ.get("REQUEST_METHOD")
    if method not in ("GET", "POST"):
        return "405 Method Not Allowed", {"error": "use GET or POST"}
    if not is_loopback(environ.get("REMOTE_ADDR")):
        return "403 Forbidden", {"error": "dumps are answered to loopback clients only"}
    with _lock:
        now = time.monotonic()
        if now - _last < MIN_SECONDS:
            return "429 Too Many Requests", {"error": f"one dump per {MIN_SECONDS:g} s"}
        _last = now
    try:
        return answer()
    except Exception as error:
        from obskit._lifecycle import internal_errors as _internal_errors

        with contextlib.suppress(Exception):  # (strict mode raises it)
            _internal_errors.report("dumps", error)
        return "500 Internal Server Error", {"error": "the dump failed (see the log)"}
