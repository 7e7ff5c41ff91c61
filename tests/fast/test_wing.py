"""The accelerator wing as a whole: only obskit/_fast/ touches dependencies' internals,
one switch turns every accelerator off, each reports its state, and with any of them off
the public-API paths serve the same telemetry."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
import obskit.testing
from obskit._fast import spans as _spans
from obskit._fast import status
from obskit._tools import doctor
from tests.conftest import openmetrics, wsgi_request

PACKAGE = Path(obskit.__file__).parent
#: Top-level names of obskit's dependencies (runtime, extras, what integrations wrap).
DEPENDENCIES = frozenset(
    {
        "opentelemetry",
        "prometheus_client",
        "structlog",
        "wrapt",
        "flask",
        "werkzeug",
        "django",
        "gunicorn",
        "uvicorn",
        "starlette",
        "fastapi",
        "celery",
        "requests",
        "httpx",
        "urllib3",
        "sqlalchemy",
        "psycopg",
        "psycopg2",
    }
)
#: Underscore names that are public API: namedtuple's methods, CPython's documented
#: ``sys._getframe``/``os._exit``.
PUBLIC_UNDERSCORE = frozenset(
    {"_replace", "_asdict", "_make", "_fields", "_getframe", "_exit", "_current_frames"}
)


def _modules(inside_wing: bool) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if ("_fast" in path.relative_to(PACKAGE).parts) == inside_wing:
            yield path, ast.parse(path.read_text(), str(path))


def _own_names() -> tuple[set[str], set[str]]:
    """What obskit itself defines outside the wing: (attributes of its classes and
    instances: class-body names, ``self.x``/``cls.x`` assignments, ``__slots__``
    entries; module-level names of its modules). Reading one of those is reading
    obskit's own state; module-level names count only when read from an obskit module."""
    attributes: set[str] = set()
    module_level: set[str] = set()
    for _, tree in _modules(inside_wing=False):
        for statement in tree.body:
            for node in ast.walk(statement):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    module_level.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    module_level.add(node.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        attributes.add(item.name)
                    for target in ast.walk(item) if isinstance(item, ast.Assign) else ():
                        if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                            attributes.add(target.id)
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        attributes.add(item.target.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                attributes.add(node.attr)
            elif isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
            ):
                attributes.update(
                    item.value
                    for item in ast.walk(node.value)
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)
                )
    return attributes, module_level


def _obskit_module_aliases(tree: ast.Module) -> set[str]:
    """Names a module binds to obskit's own modules (``from obskit._x import y as _y``)."""
    aliases = {"obskit"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("obskit"):
            aliases.update(alias.asname or alias.name for alias in node.names)
    return aliases


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def test_no_module_outside_the_wing_touches_a_dependencys_private_names() -> None:
    """An AST scan of every module outside obskit/_fast/: no import of a dependency's
    private module or name, no read or write of an underscore attribute obskit does not
    define itself (``span._context``, ``tracer._span_limits``, ``child._labelvalues``),
    and no ``getattr``/``setattr``/``hasattr`` of one by string."""
    attributes, module_level = _own_names()
    found: list[str] = []
    for path, tree in _modules(inside_wing=False):
        where = path.relative_to(PACKAGE.parent)
        modules = _obskit_module_aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] in DEPENDENCIES and (
                    any(_private(part) for part in parts)
                    or any(_private(alias.name) for alias in node.names)
                ):
                    found.append(f"{where}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] in DEPENDENCIES and any(_private(part) for part in parts):
                        found.append(f"{where}:{node.lineno} import {alias.name}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                of_module = isinstance(node.value, ast.Name) and node.value.id in modules
                if node.attr not in attributes and not (of_module and node.attr in module_level):
                    found.append(f"{where}:{node.lineno} .{node.attr}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and node.args[1].value not in attributes
            ):
                found.append(f"{where}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    assert found == []


def test_the_scan_catches_what_it_forbids(tmp_path: Path) -> None:
    """The scan above is not vacuous: each forbidden form is found in a sample module."""
    sample = ast.parse(
        "from opentelemetry.sdk.trace import _Span\n"
        "from opentelemetry.sdk.trace._tracer_metrics import noop\n"
        "limits = tracer._span_limits\n"
        "getattr(textmap, '_propagators', None)\n"
    )
    hits = [
        node
        for node in ast.walk(sample)
        if (isinstance(node, ast.ImportFrom) and node.module)
        or (isinstance(node, ast.Attribute) and _private(node.attr))
        or (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr")
    ]
    assert len(hits) == 4
    attributes, _ = _own_names()
    assert "_span_limits" not in attributes  # (a function's name in obskit/_traces/pipeline.py)
    assert "_propagators" not in attributes


def test_every_accelerator_reports_its_state_and_the_switch_turns_all_off() -> None:
    """init() decides every accelerator once; each has a status with a reason, shown by
    obskit_fast_path_enabled{path} and doctor; fast_paths=False turns every one off."""
    obskit.init(service_name="wing", log_level="error")
    on = {item.path: item for item in status.statuses()}
    assert {"spans", "span_context", "propagation"} <= set(on)
    for item in on.values():
        assert item.reason == "on" if item.enabled else item.reason not in ("", "on")
    gauge = {s.labels["path"]: s.value for s in openmetrics()["obskit_fast_path_enabled"].samples}
    assert gauge == {path: (1.0 if item.enabled else 0.0) for path, item in on.items()}
    lines = doctor._fast_path_checks()
    assert {check.name for check in lines} == {f"fast path {path}" for path in on}

    obskit.init(service_name="wing", log_level="error", fast_paths=False)
    off = status.statuses()
    assert [item.enabled for item in off] == [False] * len(off)
    assert {item.reason for item in off} == {status.SWITCHED_OFF}
    gauge = {s.labels["path"]: s.value for s in openmetrics()["obskit_fast_path_enabled"].samples}
    assert set(gauge.values()) == {0.0}


def test_the_environment_switch_is_obskit_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """OBSKIT_FAST_PATHS=0 is the same switch, and a bad value is a ConfigError."""
    monkeypatch.setenv("OBSKIT_FAST_PATHS", "0")
    obskit.init(service_name="wing", log_level="error")
    assert not any(item.enabled for item in status.statuses())
    monkeypatch.setenv("OBSKIT_FAST_PATHS", "sometimes")
    with pytest.raises(obskit.ConfigError, match="OBSKIT_FAST_PATHS"):
        obskit.init(service_name="wing")


def test_a_check_that_raises_turns_its_accelerator_off_with_the_reason() -> None:
    """A check that fails on an unknown dependency costs that accelerator, nothing else."""

    def broken() -> str | None:
        raise AttributeError("'Tracer' object has no attribute '_span_limits'")

    applied: list[bool] = []
    status.register("probe", broken, applied.append)
    try:
        (probe,) = [item for item in status.decide(True) if item.path == "probe"]
        assert not probe.enabled
        assert "_span_limits" in probe.reason
        assert applied == [False, False]
    finally:
        with status._lock:
            del status._registered["probe"]


def _request_telemetry(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """One traced Flask request: its span, access line, exemplar and traceresponse."""
    app = Flask("wing")

    @obskit.traced
    def work() -> int:
        obskit.get_logger("wing").info("working")
        return 1

    @app.get("/items/<int:item>")
    def item(item: int) -> str:
        return str(work() + item)

    obskit.instrument_flask(app)
    status_code, headers, _ = wsgi_request(
        app, "/items/3", headers=[("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-01")]
    )
    assert status_code == 200
    finished = {span.name: span for span in exporter.get_finished_spans()}
    server = finished["GET /items/<int:item>"]
    (inner,) = [span for span in finished.values() if span.name.endswith(".work")]
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    families = openmetrics()
    (exemplar,) = [
        sample.exemplar
        for sample in families["http_server_request_duration_seconds"].samples
        if sample.exemplar is not None
    ]
    return {
        "server": (server.kind, dict(server.attributes or {}), server.parent.span_id),
        "inner_parent": inner.parent.span_id == server.context.span_id,
        "trace": {span.context.trace_id for span in finished.values()},
        "traceresponse": headers["traceresponse"].split("-")[1],
        "lines": sorted(
            (line.get("logger"), line.get("trace_id")) for line in lines if "trace_id" in line
        ),
        "exemplar": exemplar.labels["trace_id"],
        "function_histogram": families["obskit_function_duration_seconds"].samples[0].name,
    }


@pytest.mark.parametrize("fast_paths", [True, False], ids=["on", "off"])
def test_the_public_paths_serve_the_same_request_contract(
    spans: Callable[..., InMemorySpanExporter],
    capsys: pytest.CaptureFixture[str],
    fast_paths: bool,
) -> None:
    """A Flask request continuing a W3C trace, with a @traced call and a log line inside:
    the same span, ids, log correlation, exemplar and traceresponse with the accelerators
    on and off."""
    exporter = spans(service_name="wing", fast_paths=fast_paths)
    capsys.readouterr()
    result = _request_telemetry(exporter, capsys)
    trace_id = "ab" * 16
    kind, attributes, parent = result["server"]
    assert kind.name == "SERVER"
    assert parent == int("cd" * 8, 16)
    assert attributes["http.route"] == "/items/<int:item>"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/3"
    assert result["inner_parent"]
    assert result["trace"] == {int(trace_id, 16)}
    assert result["traceresponse"] == result["exemplar"] == trace_id
    assert ("wing", trace_id) in result["lines"]
    assert ("obskit.access", trace_id) in result["lines"]


def test_a_simulated_old_sdk_turns_the_span_path_off_and_the_sdk_path_serves(
    spans: Callable[..., InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the SDK's private names missing (as if an SDK release renamed them), the spans
    accelerator is off with that reason, and requests and @traced calls still make the
    same spans through the SDK's public calls."""
    monkeypatch.setattr(_spans, "_AVAILABLE", False)
    monkeypatch.setattr(_spans, "_import_error", "cannot import name '_Span' (simulated)")
    exporter = spans(service_name="wing", fast_paths=True)
    by_path = {item.path: item for item in status.statuses()}
    assert not by_path["spans"].enabled
    assert "_Span" in by_path["spans"].reason
    handle = obskit._lifecycle.runtime.current()
    assert handle is not None
    assert _spans.fast_tracer(handle.tracer) is None
    capsys.readouterr()
    result = _request_telemetry(exporter, capsys)
    kind, attributes, parent = result["server"]
    assert (kind.name, parent) == ("SERVER", int("cd" * 8, 16))
    assert attributes["http.route"] == "/items/<int:item>"
    assert result["inner_parent"]
    assert result["trace"] == {int("ab" * 16, 16)}
    assert result["traceresponse"] == result["exemplar"] == "ab" * 16


def test_capture_runs_the_production_span_path() -> None:
    """obskit.testing.capture() (sequential ids included) keeps the span path production
    takes: the accelerator when it is on for this SDK."""
    with obskit.testing.capture() as captured:
        handle = obskit._lifecycle.runtime.current()
        assert handle is not None
        # The tracer capture() uses takes the fast path exactly when production's does.
        assert (_spans.fast_tracer(handle.tracer) is not None) == status.enabled("spans")

        @obskit.traced
        def step() -> None:
            obskit.get_logger("wing").info("step")

        step()
        (span,) = captured.spans
        assert span.context.trace_id == 1
        assert span.context.span_id == 1
        assert captured.logs[0]["trace_id"] == "0" * 31 + "1"
