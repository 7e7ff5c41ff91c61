"""init()/shutdown() lifecycle: re-init, races, disabled mode, exit, import side effects."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._lifecycle import runtime as _runtime
from tests.receivers import OtlpHttpReceiver
from tests.servers import run_python

ROOT = Path(__file__).resolve().parents[1]


def _export_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.is_alive()}


@pytest.fixture(autouse=True)
def _earlier_threads() -> None:
    """Export threads of earlier tests (abandoned on purpose by timeouts) are not counted."""
    global _BASELINE
    _BASELINE = _export_threads()


_BASELINE: set[threading.Thread] = set()


def _new_export_threads() -> set[threading.Thread]:
    return _export_threads() - _BASELINE


def _sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def test_same_settings_return_the_same_handle(http_receiver: OtlpHttpReceiver) -> None:
    """A second init() with identical settings is a no-op returning the same handle."""
    first = obskit.init(service_name="a", otlp_endpoint=http_receiver.endpoint)
    second = obskit.init(service_name="a", otlp_endpoint=http_receiver.endpoint)
    assert first is second
    assert len(_new_export_threads()) == 1


def test_different_settings_replace_the_pipeline_cleanly(
    http_receiver: OtlpHttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Re-init with new settings flushes the old pipeline, leaves one thread, warns nothing."""
    caplog.set_level(logging.WARNING)
    # log_stdlib=False keeps pytest's capture handler on the root logger.
    first = obskit.init(service_name="a", otlp_endpoint=http_receiver.endpoint, log_stdlib=False)
    cached_tracer = trace.get_tracer("cached.at.import")
    with cached_tracer.start_as_current_span("before"):
        pass
    second = obskit.init(service_name="b", otlp_endpoint=http_receiver.endpoint, log_stdlib=False)
    assert second is not first
    with cached_tracer.start_as_current_span("after"):
        pass
    assert len(_new_export_threads()) == 1
    obskit.shutdown(timeout=10)
    spans = {span.name: span.resource["service.name"] for span in http_receiver.wait_for(2)}
    # The tracer cached before the re-init follows the switch to the new pipeline.
    assert spans == {"before": "a", "after": "b"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_init_works_again_after_shutdown(http_receiver: OtlpHttpReceiver) -> None:
    """shutdown() then init() gives a working pipeline; shutdown() twice is harmless."""
    obskit.init(otlp_endpoint=http_receiver.endpoint)
    assert obskit.shutdown() is True
    assert obskit.shutdown() is True
    with trace.get_tracer("t").start_as_current_span("while-down") as span:
        assert not span.get_span_context().is_valid
    handle = obskit.init(otlp_endpoint=http_receiver.endpoint)
    with trace.get_tracer("t").start_as_current_span("again"):
        pass
    assert handle.shutdown(timeout=10)
    assert [span.name for span in http_receiver.wait_for(1)] == ["again"]
    assert _runtime.current() is None


def test_init_from_eight_threads_builds_one_pipeline(http_receiver: OtlpHttpReceiver) -> None:
    """Eight concurrent init() calls share one handle, one provider and one export thread."""
    barrier = threading.Barrier(8)
    handles: list[obskit.Telemetry] = []

    def start() -> None:
        barrier.wait()
        handles.append(
            obskit.init(service_name="race", otlp_endpoint=http_receiver.endpoint, log_stdlib=False)
        )

    with _no_warnings():
        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(handles) == 8
    assert len({id(handle) for handle in handles}) == 1
    assert len(_new_export_threads()) == 1
    switch = _runtime.tracer_switch()
    assert trace.get_tracer_provider() is switch
    assert isinstance(switch.inner if switch else None, TracerProvider)


class _no_warnings:
    """Fail if any warning or obskit/OpenTelemetry WARNING log happens inside the block."""

    def __enter__(self) -> None:
        self._records: list[logging.LogRecord] = []
        self._handler = logging.Handler(logging.WARNING)
        self._handler.emit = self._records.append  # type: ignore[method-assign]
        logging.getLogger().addHandler(self._handler)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self._handler)
        assert [r.getMessage() for r in self._records] == []


def test_disabled_starts_no_threads_and_opens_no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true: init() returns a no-op handle; no thread, no socket, no spans."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    threads, sockets = set(threading.enumerate()), _sockets()
    handle = obskit.init(service_name="off")
    assert handle.disabled
    assert handle.tracer_provider is None
    with trace.get_tracer("t").start_as_current_span("noop") as span:
        assert not span.is_recording()
    assert set(threading.enumerate()) == threads
    assert _sockets() == sockets


def test_no_exporter_logs_one_hint_and_still_makes_spans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without an exporter, spans still get ids and init() says once how to export them."""
    obskit.init(service_name="quiet")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hints = [line for line in lines if "OTEL_EXPORTER_OTLP_ENDPOINT" in line["event"]]
    assert len(hints) == 1
    assert hints[0]["logger"] == "obskit"
    assert hints[0]["level"] == "info"
    with trace.get_tracer("t").start_as_current_span("local") as span:
        assert span.get_span_context().is_valid
    obskit.init(service_name="quiet", traces_exporter="none")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in capsys.readouterr().out


def test_console_exporter_prints_each_trace_as_a_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """traces_exporter='console' prints a finished trace once, as a tree, on stderr."""
    obskit.init(service_name="x", traces_exporter="console")
    with trace.get_tracer("t").start_as_current_span("hello") as span:
        with trace.get_tracer("t").start_as_current_span("child"):
            pass
        assert capsys.readouterr().err == ""  # nothing until the root ends
    err = capsys.readouterr().err
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert err.startswith(f"trace {trace_id}")
    assert "\nhello " in err
    assert "\n  child " in err


def test_attribute_values_are_truncated_to_the_limit(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """Span attribute strings are bounded (default 4096) — upstream's default is unlimited."""
    exporter = spans()
    with trace.get_tracer("t").start_as_current_span("big") as span:
        span.set_attribute("blob", "x" * 10_000)
    (finished,) = exporter.get_finished_spans()
    assert len(str((finished.attributes or {})["blob"])) == 4096


def test_propagators_default_to_w3c_trace_context_and_baggage() -> None:
    """The global propagator injects traceparent and baggage after init()."""
    from opentelemetry import baggage, context, propagate

    obskit.init()
    carrier: dict[str, str] = {}
    with trace.get_tracer("t").start_as_current_span("out") as span:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        propagate.inject(carrier)
        context.detach(token)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert carrier["traceparent"].split("-")[1] == trace_id
    assert carrier["baggage"] == "tenant=acme"
    obskit.init(propagators="none")
    carrier = {}
    with trace.get_tracer("t").start_as_current_span("out"):
        propagate.inject(carrier)
    assert carrier == {}


def test_sampler_settings_choose_the_sampler() -> None:
    """always_off drops every root span; parentbased follows an incoming sampled parent."""
    from opentelemetry import propagate

    obskit.init(traces_sampler="parentbased_always_off")
    tracer = trace.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert not root.get_span_context().trace_flags.sampled
    parent = propagate.extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    with tracer.start_as_current_span("child", context=parent) as child:
        assert child.get_span_context().trace_flags.sampled
        assert format(child.get_span_context().trace_id, "032x").startswith("0af76519")
    obskit.init(traces_sampler="always_off")
    with tracer.start_as_current_span("child", context=parent) as child:
        assert not child.get_span_context().trace_flags.sampled


def test_import_does_no_work() -> None:
    """`import obskit` reads no env var, starts no thread, imports no framework or SDK."""
    result = run_python(
        """
        import json, os, sys, threading
        reads = []
        class Spy(dict):
            def __getitem__(self, key):
                reads.append(key); return super().__getitem__(key)
            def get(self, key, default=None):
                reads.append(key); return super().get(key, default)
        os.environ = Spy(os.environ)
        import obskit
        heavy = ("flask", "django", "gunicorn", "prometheus_client", "structlog",
                 "opentelemetry.sdk", "grpc")
        print(json.dumps({
            "reads": [r for r in reads if r.startswith(("OTEL_", "OBSKIT_"))],
            "threads": threading.active_count(),
            "loaded": [m for m in heavy if m in sys.modules],
        }))
        """
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts == {"reads": [], "threads": 1, "loaded": []}


def test_init_without_exporter_loads_no_export_machinery() -> None:
    """init(traces_exporter="none") imports no exporter code; OTLP init does (import cost)."""
    modules = (
        "obskit._traces.guarded_export",
        "obskit._traces.export_reasons",
        "obskit._traces.console_tree",
        "opentelemetry.sdk.trace.export",
    )
    code = f"""
        import json, sys
        import obskit
        obskit.init(traces_exporter={{exporter!r}}, log_level="error")
        print(json.dumps([m for m in {modules!r} if m in sys.modules]))
        obskit.shutdown()
        """
    quiet = run_python(code.format(exporter="none"))
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout.splitlines()[-1]) == []
    otlp = run_python(
        code.format(exporter="otlp"), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert otlp.returncode == 0, otlp.stderr
    assert json.loads(otlp.stdout.splitlines()[-1]) == [
        "obskit._traces.guarded_export",
        "obskit._traces.export_reasons",
        "obskit._traces.console_tree",
        "opentelemetry.sdk.trace.export",
    ]


def test_interpreter_exit_flushes_spans(http_receiver: OtlpHttpReceiver) -> None:
    """A script that never calls shutdown() still delivers its spans at exit."""
    result = run_python(
        f"""
        import obskit
        from opentelemetry import trace
        obskit.init(service_name="exit", otlp_endpoint="{http_receiver.endpoint}")
        with trace.get_tracer("t").start_as_current_span("at-exit"):
            pass
        """
    )
    assert result.returncode == 0, result.stderr
    assert [span.name for span in http_receiver.wait_for(1)] == ["at-exit"]


def test_another_global_provider_is_reported_not_overridden() -> None:
    """If something else installed a global provider first, obskit warns and leaves it."""
    result = run_python(
        """
        import logging
        logging.basicConfig(level=logging.WARNING)
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        theirs = TracerProvider()
        trace.set_tracer_provider(theirs)
        import obskit
        obskit.init()
        assert trace.get_tracer_provider() is theirs
        """
    )
    assert result.returncode == 0, result.stderr
    assert "another OpenTelemetry tracer provider" in result.stderr
    assert "Overriding" not in result.stderr


def test_bad_batch_processor_variables_fail_init_with_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_BSP_* values the SDK rejects surface as one ConfigError from init()."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10000")
    with pytest.raises(obskit.ConfigError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        obskit.init(otlp_endpoint="http://127.0.0.1:9")


def test_sigterm_flushes_then_chains_to_the_previous_handler(
    http_receiver: OtlpHttpReceiver,
) -> None:
    """obskit's SIGTERM handler exports buffered spans, then calls the handler that was
    installed before init(); shutdown() puts that handler back."""
    import signal

    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(len(http_receiver.spans))

    original = signal.signal(signal.SIGTERM, previous)
    try:
        obskit.init(otlp_endpoint=http_receiver.endpoint)
        with trace.get_tracer("t").start_as_current_span("buffered"):
            pass
        assert http_receiver.spans == []  # still in the batch queue
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [1]  # flushed before the previous handler ran
        obskit.shutdown()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)
