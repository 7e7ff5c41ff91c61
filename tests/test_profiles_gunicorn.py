"""Profiles from a real gunicorn deployment, read by real readers: two sync workers
with obskit's hooks, each writing pprof files to a directory and sending them to a
Pyroscope-compatible ingest server; ``go tool pprof`` reads the files, and the samples'
span ids are those of the spans the OTLP receiver got."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.go_pprof import go_binary
from tests.go_pprof import pprof as go_pprof
from tests.pyroscope_server import PyroscopeServer, sample_labels
from tests.receivers import OtlpHttpReceiver
from tests.servers import Server


@pytest.fixture
def pyroscope() -> Iterator[PyroscopeServer]:
    server = PyroscopeServer()
    try:
        yield server
    finally:
        server.close()


def _reports(receiver: OtlpHttpReceiver) -> dict[str, Any]:
    """The server spans of /report requests the receiver got, by span id."""
    return {span.span_id: span for span in receiver.spans if span.name == "GET /report/<int:n>"}


@pytest.mark.slow
def test_profiles_of_traced_requests_name_their_spans_in_go_pprof_and_pyroscope(
    tmp_path: Path, http_receiver: OtlpHttpReceiver, pyroscope: PyroscopeServer
) -> None:
    """gunicorn (2 workers, hooks) with profiles on: after requests to a CPU-bound route,
    `go tool pprof -top` of the written files, focused on one request's span id, puts
    render_report first, `-tags` lists
    span_id values that are the server spans the receiver got (and their trace ids),
    root spans carry pyroscope.profile.id, and the ingest server received profiles
    named by the service (its version as a series label) with the same labels."""
    go_binary()
    profiles = tmp_path / "profiles"
    server = Server(
        tmp_path,
        [
            "gunicorn",
            "-c",
            "examples/gunicorn.conf.py",
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:{port}",
            "tests.apps.profiled_app:create_app()",
        ],
        {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OBSKIT_PROFILES": "true",
            "OBSKIT_PROFILE_HZ": "200",
            "OBSKIT_PROFILE_INTERVAL": "1",
            "OBSKIT_PROFILE_DIR": str(profiles),
            "OBSKIT_PYROSCOPE_ENDPOINT": pyroscope.url,
            "OBSKIT_SERVICE_VERSION": "1.4.2",
        },
        ready_path="/health",
    )
    try:
        for n in range(4):
            assert server.get(f"/report/{n}")[0] == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_reports(http_receiver)) < 4:
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(list(profiles.glob("*.pb.gz"))) < 2:
            time.sleep(0.2)
        time.sleep(1.5)  # one more interval: the last request's samples are written
    finally:
        server.stop()
    reports = _reports(http_receiver)
    assert len(reports) == 4
    for span in reports.values():
        assert span.attributes["pyroscope.profile.id"] == span.span_id
    files = [str(path) for path in sorted(profiles.glob("*.pb.gz"))]
    assert files
    # A wall-clock profile: idle workers' waits are in it too; one request's samples,
    # selected by its span id as Grafana does, have the busy function on top.
    some = next(iter(reports))
    top = go_pprof(Path(files[0]), "-top", f"-tagfocus=span_id={some}", *files[1:])
    first = next(line for line in top.splitlines() if re.match(r"\s*\d", line))
    assert "render_report" in first, top
    tags = go_pprof(Path(files[0]), "-tags", *files[1:])
    assert set(reports) <= set(re.findall(r"\b([0-9a-f]{16})\b", tags)), tags
    trace_ids = {span.trace_id for span in reports.values()}
    assert trace_ids <= set(re.findall(r"\b([0-9a-f]{32})\b", tags)), tags
    # Pyroscope's ingest API got the same profiles, decodable, named by the service.
    assert pyroscope.received
    labelled: set[str] = set()
    for ingest in pyroscope.received:
        assert ingest.app == "profiled"
        assert ingest.labels["service_version"] == "1.4.2"  # (the resource, as labels)
        assert ingest.query["format"] == "pprof"
        labelled.update(x["span_id"] for x in sample_labels(ingest.profile) if "span_id" in x)
    assert set(reports) <= labelled
