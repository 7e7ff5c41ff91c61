"""OpenTelemetry's contrib instrumentations switched on through obskit: their spans join
obskit's traces and pipeline (across re-init), bad names fail init() with the fix, and
``obskit constraints`` pins what a contrib install must not move."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

import obskit
from obskit._lifecycle.contrib import NATIVE, chosen
from obskit.cli import main
from tests.receivers import OtlpHttpReceiver
from tests.servers import run_python

REDIS_JOB = """
    import json, os, sys
    import redis
    import obskit

    def job(label):
        log = obskit.get_logger("job")
        with obskit.span(f"job {label}") as span:
            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            client.set(f"key-{label}", "value")
            assert client.get(f"key-{label}") == b"value"
            log.info("stored", label=label)
        return format(span.get_span_context().trace_id, "032x")

    settings = dict(service_name="contrib", contrib_instrumentations=["redis"], metrics_port=0)
    obskit.init(**settings)
    first = job("one")
    obskit.shutdown()
    obskit.init(**settings)  # a new pipeline: the instrumentation follows it
    second = job("two")
    obskit.shutdown()
    print(json.dumps({"first": first, "second": second}))
"""


@pytest.mark.slow
def test_contrib_redis_spans_join_obskits_trace_and_follow_reinit(
    redis_url: str, http_receiver: OtlpHttpReceiver
) -> None:
    """With contrib_instrumentations=redis, redis commands are CLIENT spans under the
    active obskit span, exported by obskit's pipeline before and after a re-init, and
    the log line in the block carries the same trace id."""
    pytest.importorskip("opentelemetry.instrumentation.redis")
    result = run_python(
        REDIS_JOB,
        {
            "REDIS_URL": redis_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OBSKIT_LOG_FORMAT": "json",
        },
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    traces = json.loads(lines[-1])
    spans = http_receiver.wait_for(6)
    for label in ("one", "two"):
        trace_id = traces["first" if label == "one" else "second"]
        in_trace = [span for span in spans if span.trace_id == trace_id]
        (root,) = [span for span in in_trace if span.name == f"job {label}"]
        commands = sorted(span.name for span in in_trace if span is not root)
        assert commands == ["GET", "SET"]
        assert all(span.parent_span_id == root.span_id for span in in_trace if span is not root)
        assert {
            span.attributes.get("db.system") or span.attributes.get("db.system.name")
            for span in in_trace
            if span is not root
        } == {"redis"}
        logged = [json.loads(line) for line in lines if '"stored"' in line]
        assert [line["trace_id"] for line in logged if line["label"] == label] == [trace_id]


def test_a_name_that_is_not_installed_fails_init_with_the_install_command() -> None:
    """An instrumentation that is not installed: one ConfigError naming the setting, the
    value, the installed ones and the pip command that keeps the installed SDK."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(contrib_instrumentations=["kafka_not_here"])
    error = caught.value
    assert error.setting == "contrib_instrumentations"
    assert "kafka_not_here" in str(error)
    assert "pip install opentelemetry-instrumentation-kafka-not-here" in str(error)
    assert "obskit constraints" in str(error)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_a_library_obskit_instruments_needs_obskits_own_switched_off(name: str) -> None:
    """Naming a library obskit instruments itself fails init() (both would record each
    call), with the setting that resolves it."""
    with pytest.raises(obskit.ConfigError, match="disabled_instrumentations"):
        obskit.init(contrib_instrumentations=[name])


def test_all_expands_to_the_installed_ones_obskit_does_not_cover() -> None:
    """`all` means every installed contrib instrumentation except obskit's own libraries
    and the disabled ones; a native one named while obskit's is disabled is kept."""
    available = ["redis", "requests", "grpc_client", "logging", "kafka"]
    assert chosen(["all"], ["kafka"], available) == ["grpc_client", "redis"]
    assert chosen(["redis", "requests"], ["requests", "redis"], available) == ["requests"]


def test_constraints_pin_every_installed_opentelemetry_distribution_but_instrumentations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`obskit constraints` prints name==version for the installed OpenTelemetry API,
    SDK, semantic conventions and exporters (what a contrib install must not move), and
    no instrumentation package (pip picks the one matching them)."""
    assert main(["constraints"]) == 0
    pins = dict(line.split("==") for line in capsys.readouterr().out.splitlines())
    for name in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-semantic-conventions"):
        assert pins[name] == importlib.metadata.version(name)
    assert not [name for name in pins if name.startswith("opentelemetry-instrumentation-")]
