"""Where profiles go: a directory of pprof files (:class:`DirectoryWriter`) and Grafana
Pyroscope's ingest API (:class:`PyroscopeClient`). Neither raises: a failure is an
answer (``None``/``False``), an obskit bug is reported to
:mod:`obskit._lifecycle.internal_errors` (component ``profiles``), which raises it only
in strict mode.

**Files.** ``profile-<UTC start time>-<pid>.pb.gz`` (``profile-20250301T101502.123456Z-
4242.pb.gz``), written to a temporary name in the same directory and renamed, so a
reader never sees half a file. After each write the oldest profile files of the
directory (named as obskit names them, any process's) are deleted until the directory's
profiles take at most ``max_bytes``: the file just written always stays. Several
processes (gunicorn workers) may share the directory; each file names its process.

**Pyroscope.** One ``POST <endpoint>/ingest?name=<app>{k=v,...}&from=<s>&until=<s>
&format=pprof&sampleRate=<hz>&spyName=obskit`` per profile, the gzipped pprof as the
raw body (``Content-Type: binary/octet-stream``): with ``format=pprof`` Pyroscope's
ingest handler (and Grafana Alloy's ``pyroscope.receive_http``, which speaks the same
API) reads the body itself as the profile, and unzips it. (The multipart form with a
``profile`` field is what it expects *without* ``format=pprof``.) Pyroscope's name
syntax is enforced here, so a request is never refused for its labels:

- the application name keeps ``A-Z a-z 0-9 _ . - /`` (others become ``_``);
- label names keep ``A-Z a-z 0-9 _`` (Prometheus' names, which Pyroscope validates
  series labels against; ``http.route`` becomes ``http_route``); names starting with
  ``__`` and ``service_name`` (Pyroscope sets it from the application name) are dropped;
- label values lose ``,``, ``{`` and ``}`` (they end a value in the ``name`` syntax) and
  surrounding spaces, and are cut to 2048 bytes; empty values are dropped;
- at most :data:`MAX_LABELS` labels are sent.

Pyroscope turns every pprof sample label except ``span_id`` into a *series* label:
:func:`for_pyroscope` therefore drops ``trace_id`` (one series per trace would be
unbounded) and renames the rest the same way; encode its result for Pyroscope.
``span_id`` stays: it is what Pyroscope's span profiles (Grafana's "traces to profiles")
look up.

Authentication: HTTP basic auth (``basic_auth=(user, password)``, or ``user:password@``
in the endpoint, which is then taken out of the URL) and a tenant (``tenant_id``: the
``X-Scope-OrgID`` header of multi-tenant Pyroscope). The request is sent with
OpenTelemetry's instrumentation suppressed, so neither obskit's nor a contrib
instrumentation of ``urllib`` traces it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context

from obskit._lifecycle import internal_errors as _internal_errors
from obskit._profiles.window import Labels, Stack, Window
from obskit._traces.export_reasons import error_reason, http_reason
from obskit._version import __version__

__all__ = [
    "COMPONENT",
    "DROPPED_LABELS",
    "MAX_LABELS",
    "DirectoryWriter",
    "PyroscopeClient",
    "file_name",
    "for_pyroscope",
    "label_name",
    "label_value",
    "series_name",
]

#: The component of obskit's internal errors raised here.
COMPONENT = "profiles"
#: Sample labels :func:`for_pyroscope` leaves out: Pyroscope makes a series of each
#: value (a trace id, a thread per request) would make one per trace or per thread.
DROPPED_LABELS = frozenset({"trace_id", "thread_name"})
#: Labels sent in the ``name`` of an ingest request, at most.
MAX_LABELS = 20
#: Pyroscope's default limits on a label's name and value (bytes).
MAX_NAME_BYTES = 1024
MAX_VALUE_BYTES = 2048
#: Seconds between two log lines about failed sends of one client.
LOG_INTERVAL = 60.0
#: A temporary file this old was left by a process that died while writing it.
STALE_TEMP_SECONDS = 3600.0

_log = logging.getLogger("obskit")
_PROFILE_FILE = re.compile(r"profile-\d{8}T\d{6}\.\d{6}Z-\d+\.pb\.gz")
_TEMP_FILE = re.compile(r"\.profile-.*\.tmp")
_NOT_IN_APP_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")
_NOT_IN_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")
_NOT_IN_LABEL_VALUE = re.compile(r"[,{}]")
#: OpenTelemetry's suppression key by its plain name: obskit's HTTP client
#: instrumentation and OpenTelemetry's contrib instrumentations (``is_instrumentation_
#: enabled``) both honour it.
_SUPPRESS = "suppress_instrumentation"


def file_name(start_ns: int, pid: int) -> str:
    """The name of the profile file of a window starting at ``start_ns`` (ns since the
    epoch) written by process ``pid``."""
    seconds, nanoseconds = divmod(max(0, start_ns), 1_000_000_000)
    start = datetime.fromtimestamp(seconds, timezone.utc)
    return f"profile-{start:%Y%m%dT%H%M%S}.{nanoseconds // 1000:06d}Z-{pid}.pb.gz"


class DirectoryWriter:
    """Writes profiles to ``path`` (created if missing), keeping its profile files within
    ``max_bytes`` together by deleting the oldest."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)

    def write(self, data: bytes, start_ns: int) -> Path | None:
        """Write one profile (``data``: gzipped pprof) of a window starting at
        ``start_ns``; the file's path, or ``None`` when it could not be written (or is
        larger than ``max_bytes`` alone), the error counted and logged."""
        try:
            return self._write(data, start_ns)
        except Exception as error:
            _internal_errors.report(COMPONENT, error)
            return None

    def _write(self, data: bytes, start_ns: int) -> Path:
        if len(data) > self.max_bytes:
            raise ValueError(
                f"a profile of {len(data)} bytes exceeds the {self.max_bytes} bytes allowed"
                f" in {self.path}"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        name = file_name(start_ns, pid)
        target = self.path / name
        temp = self.path / f".{name}.{secrets.token_hex(4)}.tmp"
        # O_EXCL: never through a file or link someone put there; 0o644 less the umask.
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(descriptor, "wb") as file:
                file.write(data)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._rotate(keep=name)
        return target

    def _rotate(self, keep: str) -> None:
        """Delete the oldest profile files until they take at most ``max_bytes``."""
        files: list[tuple[str, int]] = []
        stale_before = time.time() - STALE_TEMP_SECONDS
        with os.scandir(self.path) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # another process's rotation
                    if _PROFILE_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        files.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                    elif (
                        _TEMP_FILE.fullmatch(entry.name)
                        and entry.stat(follow_symlinks=False).st_mtime < stale_before
                    ):
                        os.unlink(entry.path)
        total = sum(size for _, size in files)
        # Names sort by start time (fixed-width UTC), then by pid.
        for name, size in sorted(files):
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / name)
            total -= size


class PyroscopeClient:
    """Sends profiles to Pyroscope's ``/ingest`` at ``endpoint`` (its base URL) as
    ``app_name`` with the series labels ``labels``.

    Args:
        endpoint: Pyroscope's (or Alloy's ``pyroscope.receive_http``) base URL, http or
            https; a ``user:password@`` in it is used as basic auth.
        app_name: The application (service) name.
        labels: Labels of every profile sent (``service_version``, ...).
        timeout: Seconds each connect or read may take.
        basic_auth: ``(user, password)`` for HTTP basic auth.
        tenant_id: The ``X-Scope-OrgID`` header (multi-tenant Pyroscope).

    Raises:
        ValueError: ``endpoint`` is not an http(s) URL with a host.
    """

    def __init__(
        self,
        endpoint: str,
        app_name: str,
        labels: Mapping[str, str],
        timeout: float = 5,
        *,
        basic_auth: tuple[str, str] | None = None,
        tenant_id: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        if basic_auth is None and parts.username is not None:
            basic_auth = (
                urllib.parse.unquote(parts.username),
                urllib.parse.unquote(parts.password or ""),
            )
        host = parts.netloc.rpartition("@")[2]
        path = parts.path.rstrip("/") + "/ingest"
        #: The ingest URL, without query and credentials.
        self.url = urllib.parse.urlunsplit((parts.scheme, host, path, "", ""))
        #: The ``name`` query parameter: the application and the labels.
        self.name = series_name(app_name, labels)
        self.timeout = timeout
        self.headers = {
            "Content-Type": "binary/octet-stream",
            "User-Agent": f"obskit/{__version__}",
        }
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        if tenant_id:
            self.headers["X-Scope-OrgID"] = tenant_id
        #: Why the last send failed (``timeout``, ``http_500``, ...; ``None`` after a success).
        self.last_error: str | None = None
        # A redirect is refused (an error), never followed: urllib would resend the
        # credentials to wherever it points, as a GET that loses the profile.
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._logged_at = -LOG_INTERVAL

    def send(self, data: bytes, start_ns: int, end_ns: int, sample_rate: float) -> bool:
        """Send one profile (``data``: gzipped pprof) of the window ``start_ns`` to
        ``end_ns`` (ns since the epoch), sampled ``sample_rate`` times a second; whether
        Pyroscope accepted it (a 2xx answer). A failure is logged at most every
        :data:`LOG_INTERVAL` seconds."""
        try:
            start = start_ns // 1_000_000_000
            query = urllib.parse.urlencode(
                {
                    "name": self.name,
                    "from": start,
                    "until": max(start, -(-end_ns // 1_000_000_000)),
                    "format": "pprof",
                    "sampleRate": max(1, round(sample_rate)),
                    "spyName": "obskit",
                }
            )
            request = urllib.request.Request(
                f"{self.url}?{query}", data=data, headers=self.headers, method="POST"
            )
        except Exception as error:
            _internal_errors.report(COMPONENT, error)
            return False
        reason = self._post(request)
        self.last_error = reason
        if reason is None:
            return True
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            _log.warning(
                "obskit could not send a profile to %s: %s (logged at most every %.0f s)",
                self.url,
                reason,
                LOG_INTERVAL,
            )
        return False

    def _post(self, request: urllib.request.Request) -> str | None:
        """Send ``request``; None, or why it failed."""
        token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                status = int(response.status)
            return None if 200 <= status < 300 else http_reason(status)
        except urllib.error.HTTPError as error:
            with contextlib.suppress(Exception):
                error.close()
            return http_reason(error.code)
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
            return error_reason(error)
        except Exception as error:
            _internal_errors.report(COMPONENT, error)
            return "exception"
        finally:
            otel_context.detach(token)


def series_name(app_name: str, labels: Mapping[str, str]) -> str:
    """Pyroscope's ``name`` of a series: ``app{k=v,...}``, every part in its syntax
    (labels sorted, at most :data:`MAX_LABELS`)."""
    app = _NOT_IN_APP_NAME.sub("_", app_name.strip())[:MAX_NAME_BYTES] or "unknown_service"
    pairs: dict[str, str] = {}
    for key, value in sorted(labels.items()):
        name, text = label_name(key), label_value(value)
        if name and text and name != "service_name" and name not in pairs:
            pairs[name] = text
    if not pairs:
        return app
    shown = list(pairs.items())[:MAX_LABELS]
    return app + "{" + ",".join(f"{name}={text}" for name, text in shown) + "}"


def label_name(key: str) -> str:
    """``key`` as a Prometheus (and Pyroscope) label name; ``""`` when reserved (``__``)."""
    name = _NOT_IN_LABEL_NAME.sub("_", key.strip())[:MAX_NAME_BYTES]
    if name[:1].isdigit():
        name = "_" + name[: MAX_NAME_BYTES - 1]
    return "" if name.startswith("__") else name


def label_value(value: str) -> str:
    """``value`` as a label value Pyroscope's ``name`` syntax keeps: no ``,{}``, no
    surrounding spaces, valid UTF-8 of at most 2048 bytes."""
    text = _NOT_IN_LABEL_VALUE.sub("_", value).strip()
    encoded = text.encode("utf-8", "replace")[:MAX_VALUE_BYTES]
    return encoded.decode("utf-8", "ignore").strip()


def for_pyroscope(window: Window) -> Window:
    """``window`` with the sample labels Pyroscope is to get: ``trace_id`` dropped
    (:data:`DROPPED_LABELS`), names and values as :func:`label_name` and
    :func:`label_value` make them (``http.route`` becomes ``http_route``); samples whose
    labels became equal are merged."""
    converted: dict[Labels, Labels] = {}
    counts: dict[tuple[Stack, Labels], int] = {}
    for (stack, labels), count in window.counts.items():
        kept = converted.get(labels)
        if kept is None:
            pairs: dict[str, str] = {}
            for key, value in labels:
                if key not in DROPPED_LABELS:
                    name, text = label_name(key), label_value(value)
                    if name and text:
                        pairs.setdefault(name, text)
            kept = converted[labels] = tuple(sorted(pairs.items()))
        counts[(stack, kept)] = counts.get((stack, kept), 0) + count
    return Window(window.start_ns, window.end_ns, window.period_ns, counts, window.overflow)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects become ``HTTPError`` answers instead of being followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
