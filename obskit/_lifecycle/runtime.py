"""``init()`` and ``shutdown()``: build the pieces from Settings and install them in one slot.

The installed ``Telemetry`` is obskit's only mutable global. ``init()`` with
the same settings returns it unchanged; with different settings it installs the
new pipeline, then flushes and stops the old one. ``shutdown()`` empties the slot,
so ``init()`` works again afterwards (tests rely on this).

A span belongs to the pipeline it started in: the old pipeline exports the spans that
ended before it stopped, and counts each one that ends later as dropped
(``reason="pipeline_closed"``, see ``obskit._traces.pipeline_gate``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from obskit._config import settings as _settings
from obskit._config.settings import Settings
from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from obskit._lifecycle.global_provider import SwitchableTracerProvider
    from obskit._metrics.registry import ObskitHistogram
    from obskit._metrics.server import MasterServer, MetricsServer
    from obskit._traces.guarded_export import GuardedExporter

_log = logging.getLogger("obskit")
_lock = threading.RLock()


@after_fork.in_child
def _renew_lock() -> None:
    global _lock
    _lock = threading.RLock()


_current: Telemetry | None = None
_switch: SwitchableTracerProvider | None = None
_atexit_registered = False
#: Set when gunicorn's master (``--preload``, without obskit's hooks) left the /metrics
#: port to its workers, which start a server after the fork.
_serve_after_fork = False

_NO_EXPORTER_HINT = (
    "obskit: spans are created (their ids correlate logs) but not exported; "
    "set OTEL_EXPORTER_OTLP_ENDPOINT (or init(traces_exporter='otlp'|'console')) to export them"
)


class Telemetry:
    """The handle ``obskit.init()`` returns: the effective settings and what they built.

    Attributes:
        settings: The effective ``Settings`` (with their sources).
        resource: The OpenTelemetry resource, or ``None`` when obskit is disabled.
        tracer_provider: obskit's SDK tracer provider, or ``None`` when disabled.
    """

    def __init__(
        self,
        settings: Settings,
        resource: Resource | None = None,
        tracer_provider: TracerProvider | None = None,
        exporter: GuardedExporter | None = None,
    ) -> None:
        self.settings = settings
        self.resource = resource
        self.tracer_provider = tracer_provider
        self._exporter = exporter
        #: obskit's own tracer (for @traced and span()), straight from the SDK provider.
        self.tracer: Tracer | None = None
        #: ``obskit_function_duration_seconds``, observed by @traced.
        self.function_histogram: ObskitHistogram | None = None
        self.metrics_server: MetricsServer | None = None
        #: Fields every log line carries (service identity), from the resource.
        self.log_fields: dict[str, str] = {}
        #: The propagator obskit installed, if it reads only W3C ``traceparent``/
        #: ``tracestate``/``baggage`` (then a request without them continues nothing).
        self.w3c_propagator: object | None = None
        if resource is not None:
            for key in ("service.name", "service.version", "deployment.environment.name"):
                value = resource.attributes.get(key)
                if value is not None:
                    self.log_fields[key] = str(value)
        self._stopped = False

    @property
    def disabled(self) -> bool:
        """True when ``disabled`` (``OTEL_SDK_DISABLED``) made everything a no-op."""
        return self.settings.disabled

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export buffered spans now; return whether that finished within ``timeout`` s."""
        provider = self.tracer_provider
        if provider is None or self._stopped:
            return True
        return _within(timeout or self.settings.shutdown_timeout, provider.force_flush, "flush")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Shut down obskit if this handle is the installed one (see ``shutdown()``)."""
        with _lock:
            if _current is self:
                return shutdown(timeout)
            return self._stop(timeout)

    def _stop(self, timeout: float | None, forked: bool = False) -> bool:
        with _lock:
            if self._stopped:
                return True
            self._stopped = True
        provider = self.tracer_provider
        if provider is None:
            return True
        # TracerProvider.shutdown() ends the batch thread after it exported what is
        # queued; upstream does not bound that by time, so obskit does, then stops
        # the exporter's retries so the abandoned thread ends soon too.
        stop = _shutdown_in_child(provider) if forked else provider.shutdown
        finished = _within(timeout or self.settings.shutdown_timeout, stop, "shutdown")
        if not finished and self._exporter is not None:
            self._exporter.shutdown()
        return finished

    def __repr__(self) -> str:
        name = self.settings.service_name or "(default name)"
        state = "disabled" if self.disabled else self.settings.resolved_traces_exporter
        return f"<obskit.Telemetry service={name} traces={state}>"


def init(**settings: object) -> Telemetry:
    """Set up obskit from arguments, ``OBSKIT_*`` and ``OTEL_*`` variables; return the handle.

    Every keyword is a setting (see the configuration reference or ``obskit config``).
    Calling it again with the same settings returns the same handle; with different
    settings it replaces the previous setup cleanly.

    Raises:
        ConfigError: naming the setting, the bad value, its source and what is allowed.
    """
    global _current
    effective = _settings.load(os.environ, settings)
    with _lock:
        previous = _current
        if previous is not None and previous.settings == effective:
            return previous
        # Before the provider exists: the fork hooks obskit depends on must be installed
        # ahead of OpenTelemetry's own (see after_fork.FORK_SENSITIVE_IMPORTS).
        after_fork.register()
        telemetry = _build(effective)
        _install(telemetry)
        _current = telemetry
        _register_atexit()
    if previous is not None:
        previous._stop(previous.settings.shutdown_timeout)
    if effective.traces_exporter is None and effective.resolved_traces_exporter == "none":
        _log.info(_NO_EXPORTER_HINT)
    if not telemetry.disabled:  # several gunicorn workers without shared metrics: say so
        from obskit._metrics.gunicorn_check import warn_if_misconfigured

        warn_if_misconfigured(_log)
    return telemetry


def shutdown(timeout: float | None = None) -> bool:
    """Flush pending spans within ``timeout`` seconds and uninstall obskit.

    Safe to call twice and when obskit was never initialised. Also runs at
    interpreter exit. Returns False if flushing did not finish in time (the
    remaining spans are abandoned, the app is not held up).
    """
    global _current
    with _lock:
        telemetry, _current = _current, None
        if telemetry is None:
            return True
        if _switch is not None:
            from opentelemetry.trace import NoOpTracerProvider

            _switch.switch(NoOpTracerProvider())
        _uninstall_logs(timeout)
        if "obskit._lifecycle.library_hooks" in sys.modules:
            from obskit._lifecycle import library_hooks

            library_hooks.uninstall()
        _internal_errors.set_strict(False)
        if "obskit._lifecycle.sigterm" in sys.modules:
            from obskit._lifecycle import sigterm as _sigterm

            _sigterm.uninstall()
        _uninstall_dumps()
        if telemetry.metrics_server is not None:
            telemetry.metrics_server.stop()
            telemetry.metrics_server = None
    return telemetry._stop(timeout)


def reinit_after_fork() -> None:
    """In a forked child: rebuild the pipeline with the same settings (new pid, exporter,
    thread). The parent's /metrics server is left to the parent."""
    global _current
    previous = _current
    if previous is None or previous.tracer_provider is None:
        return
    previous.metrics_server = None  # the serving thread lives in the parent
    telemetry = _build(previous.settings)
    with _lock:
        # (decided in the parent; its /metrics server stays the parent's, unless it
        # left the port to its children: gunicorn's master with --preload, no hooks)
        _install(telemetry, serve_metrics=_serve_after_fork, decide=False, forked=True)
        _current = telemetry
    # Its queue was emptied at fork; stop the export thread it restarted in this child.
    threading.Thread(target=previous._stop, args=(1.0, True), daemon=True).start()


def _shutdown_in_child(provider: Any) -> Callable[[], None]:
    """``provider.shutdown`` for the parent's pipeline in a forked child, where
    OpenTelemetry's own after-fork hook of its batch processor (registered after
    obskit's) may be replacing the worker thread at that moment: the join then meets a
    thread not started yet. The processor is shut down by then (the new thread sees it
    and ends), so that one error is expected; the shutdown is tried again once."""

    def stop() -> None:
        try:
            provider.shutdown()
        except RuntimeError as error:
            if "before it is started" not in str(error):
                raise
            time.sleep(0.05)
            provider.shutdown()

    return stop


def current() -> Telemetry | None:
    """The installed handle, or ``None`` before ``init()`` and after ``shutdown()``."""
    return _current


def _build(settings: Settings) -> Telemetry:
    if settings.disabled:
        return Telemetry(settings)
    from obskit._metrics.registry import function_histogram, store
    from obskit._traces.pipeline import build_pipeline
    from obskit._traces.resource import build_resource
    from obskit._version import __version__

    resource = build_resource(settings, os.environ)
    provider, exporter = build_pipeline(settings, resource)
    telemetry = Telemetry(settings, resource, provider, exporter)
    telemetry.tracer = provider.get_tracer("obskit", __version__)
    metrics = store()
    metrics.configure(
        settings.metrics_max_series, settings.histogram_buckets, settings.metrics_process_collectors
    )
    telemetry.function_histogram = function_histogram(metrics)
    return telemetry


def _install(
    telemetry: Telemetry, serve_metrics: bool = True, decide: bool = True, forked: bool = False
) -> None:
    global _switch
    _internal_errors.set_strict(telemetry.settings.strict)
    provider = telemetry.tracer_provider
    if provider is None:
        if _switch is not None:
            from opentelemetry.trace import NoOpTracerProvider

            _switch.switch(NoOpTracerProvider())
        _uninstall_logs()
        _uninstall_dumps()
        if "obskit._lifecycle.library_hooks" in sys.modules:
            from obskit._lifecycle import library_hooks

            library_hooks.uninstall()
        if _current is not None and _current.metrics_server is not None:
            _current.metrics_server.stop()
            _current.metrics_server = None
        return
    from opentelemetry import propagate, trace

    from obskit._fast.status import decide as decide_fast_paths
    from obskit._lifecycle.global_provider import SwitchableTracerProvider
    from obskit._logs import install as _logging_setup
    from obskit._traces.pipeline import build_propagator

    if _switch is None:
        _switch = SwitchableTracerProvider()
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(_switch)
        else:
            _log.warning(
                "obskit: another OpenTelemetry tracer provider was installed before init(); "
                "spans from opentelemetry.trace.get_tracer() go to it, not to obskit"
            )
    _switch.switch(provider)
    if decide:
        decide_fast_paths(telemetry.settings.fast_paths)
    textmap = build_propagator(telemetry.settings)
    propagate.set_global_textmap(textmap)
    if set(telemetry.settings.propagators) <= {"tracecontext", "baggage", "none"}:
        telemetry.w3c_propagator = textmap
    _logging_setup.install(telemetry.settings, telemetry.log_fields)
    from obskit._metrics.registry import store

    store().open_counter_file()  # (after the logs: a directory problem is logged as JSON)
    store().share_fast_paths()
    from obskit._lifecycle import sigterm as _sigterm

    if telemetry.settings.flush_on_sigterm:
        _sigterm.install()
    else:
        _sigterm.uninstall()
    from obskit._dumps import install as _dumps

    _dumps.install(telemetry.settings)
    if telemetry.settings.profiles or "obskit._profiles.install" in sys.modules:
        from obskit._profiles import install as _profiles

        resource = telemetry.resource
        _profiles.install(telemetry.settings, dict(resource.attributes) if resource else None)
    from obskit._lifecycle import library_hooks

    library_hooks.install(telemetry.settings.disabled_instrumentations)
    if telemetry.settings.contrib_instrumentations:
        from obskit._lifecycle import contrib

        contrib.switch_on(
            telemetry.settings.contrib_instrumentations,
            telemetry.settings.disabled_instrumentations,
            _switch,
        )
    if serve_metrics:
        _start_metrics_server(telemetry, forked)


def _start_metrics_server(telemetry: Telemetry, forked: bool = False) -> None:
    """Keep the running /metrics server if its address is unchanged; else restart it
    (``forked``: in a child the parent left the port to)."""
    global _serve_after_fork
    from obskit._metrics import server as _server

    settings = telemetry.settings
    previous = _current
    server = previous.metrics_server if previous is not None else None
    wanted = (
        (_server.bind_address(settings.metrics_addr), settings.metrics_port)
        if settings.metrics_port
        else None
    )
    if _server.master is not None:
        _check_master_serves(settings, wanted, _server.master)
        wanted = None
    elif wanted is not None and not forked and _in_gunicorn_master():
        wanted, _serve_after_fork = None, True  # the workers have the requests
    if server is not None and (server.addr, server.port) == wanted:
        telemetry.metrics_server, previous.metrics_server = server, None  # type: ignore[union-attr]
        return
    if server is not None:
        server.stop()
        previous.metrics_server = None  # type: ignore[union-attr]
    if wanted is not None:
        from obskit._metrics.registry import store

        telemetry.metrics_server = _server.start(*wanted, store().exposition())


def _check_master_serves(
    settings: Settings, wanted: tuple[str, int] | None, master: MasterServer
) -> None:
    """Under obskit's gunicorn hooks (no server here): say so when the settings or a
    replaced ``on_starting`` hook mean the user expects something else."""
    serving = master.address()
    explicit = "argument" in (settings.sources["metrics_port"], settings.sources["metrics_addr"])
    if explicit and wanted != serving:
        _log.warning(
            "obskit: gunicorn's master serves this pod's /metrics (%s); the metrics_port/"
            "metrics_addr given to init() are not used: set OBSKIT_METRICS_PORT/"
            "OBSKIT_METRICS_ADDR in the environment gunicorn starts in instead",
            f"on {serving[0]}:{serving[1]}" if serving else "nowhere: its metrics_port is 0",
        )
    if serving is not None and not master.started() and not _in_gunicorn_master():
        _log.warning(
            "obskit: no /metrics server process was started for this pod: gunicorn.conf.py"
            " replaces obskit's on_starting hook; call"
            " obskit.integrations.gunicorn.on_starting(server) from yours"
        )


def _in_gunicorn_master() -> bool:
    """Whether gunicorn's master is loading the app here (``--preload``)."""
    if "gunicorn" not in sys.modules:
        return False
    import inspect

    from obskit._metrics.gunicorn_check import gunicorn_role

    return gunicorn_role(inspect.currentframe()) == "master"


def _uninstall_logs(timeout: float | None = None) -> None:
    if "obskit._logs.install" in sys.modules:  # never installed: nothing to undo
        from obskit._logs import install as _logging_setup

        _logging_setup.uninstall(timeout)


def _uninstall_dumps() -> None:
    if "obskit._dumps.install" in sys.modules:  # never installed: nothing to undo
        from obskit._dumps import install as _dumps

        _dumps.uninstall()
    if "obskit._profiles.install" in sys.modules:
        from obskit._profiles import install as _profiles

        _profiles.uninstall()


def _register_atexit() -> None:
    global _atexit_registered
    after_fork.register()
    if not _atexit_registered:
        atexit.register(_shutdown_at_exit)
        _atexit_registered = True


def _shutdown_at_exit() -> None:
    try:
        shutdown()
    except BaseException:  # at exit nothing is left to catch it
        _log.debug("obskit: shutdown at exit failed", exc_info=True)


def tracer_switch() -> SwitchableTracerProvider | None:
    """The provider obskit installed globally (``None`` before the first enabled ``init()``)."""
    return _switch


def _within(timeout: float, action: Callable[[], object], what: str) -> bool:
    """Run ``action()`` on a helper thread; wait at most ``timeout`` seconds for it."""
    done = threading.Event()

    def run() -> None:
        try:
            action()
        except Exception as error:
            try:
                _internal_errors.report(what, error)
            except Exception:
                _log.debug("obskit: %s failed", what, exc_info=True)
        finally:
            done.set()

    threading.Thread(target=run, name=f"obskit-{what}", daemon=True).start()
    return done.wait(timeout)
