"""Profiles switched on and off: what ``init()`` installs from the settings and
``shutdown()`` removes.

With ``profiles`` on: the sampler thread (:mod:`.sampler`) and the exporting thread,
which every ``profile_interval`` seconds takes the samples, encodes them as pprof and
writes them to ``profile_dir`` and/or sends them to ``pyroscope_endpoint``, then adds the
sampler's own counts to ``obskit_profiler_*``. The span processor
(:mod:`.span_hooks`) reads :func:`sampler` for slow spans' hot frames.

After ``fork()`` the child forgets the parent's threads and samples; the child's
``init()`` (or obskit's re-initialisation after fork) starts its own: one sampler per
process.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from obskit._config.settings import Settings
from obskit._lifecycle import after_fork
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import self_stats as _self_stats
from obskit._profiles.sampler import Sampler

__all__ = ["install", "sampler", "uninstall"]

_sampler: Sampler | None = None
_exporter: _Exporter | None = None
_lock = threading.RLock()


@after_fork.in_child
def _forget_the_parents_profiler() -> None:
    global _lock, _sampler, _exporter
    _lock = threading.RLock()
    if _sampler is not None:
        _sampler.forget_after_fork()
    _sampler = None
    _exporter = None


def sampler() -> Sampler | None:
    """The running sampler (``None`` with profiles off)."""
    return _sampler


def install(settings: Settings, resource: dict[str, Any] | None = None) -> None:
    """Start or stop profiling as ``settings`` say (never raises)."""
    global _sampler, _exporter
    try:
        with _lock:
            _stop()
            if not settings.profiles:
                return
            from obskit._dumps import active_spans

            active_spans.switch(True)  # (the span labels; on already with dumps)
            _sampler = Sampler(settings.profile_hz, settings.profile_max_stacks)
            _sampler.hot_frames = settings.profile_slow_span > 0
            _exporter = _Exporter(_sampler, settings, resource or {})
            _sampler.start()
            _exporter.start()
    except Exception as error:
        _internal_errors.report("profiles", error)


def uninstall(timeout: float = 2.0) -> None:
    """Stop profiling, writing and sending what was sampled since the last interval
    (``shutdown()``; never raises)."""
    try:
        with _lock:
            _stop(timeout)
    except Exception as error:
        with contextlib.suppress(Exception):
            _internal_errors.report("profiles", error)


def _stop(timeout: float = 2.0) -> None:
    global _sampler, _exporter
    sampler_, exporter = _sampler, _exporter
    _sampler = _exporter = None
    if sampler_ is not None:
        sampler_.stop(0.2)  # (it wakes within one period, or at once from a long wait)
    if exporter is not None:
        exporter.stop(min(timeout, 1.0))  # (shutdown's own deadline is for the spans)


class _Exporter:
    """The thread that hands each interval's samples to the destinations."""

    def __init__(self, sampler_: Sampler, settings: Settings, resource: dict[str, Any]) -> None:
        self.sampler = sampler_
        self.interval = settings.profile_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obskit-profile-export", daemon=True)
        self._destinations: list[Any] = []
        service = str(resource.get("service.name") or settings.service_name or "unknown_service")
        self.resource = {key: str(value) for key, value in resource.items()}
        if settings.profile_dir:
            from obskit._profiles.export import DirectoryWriter

            writer = DirectoryWriter(settings.profile_dir, int(settings.profile_dir_max_mb * 2**20))
            self._destinations.append(("directory", writer))
        if settings.pyroscope_endpoint:
            from obskit._profiles.export import PyroscopeClient

            labels = {
                key: self.resource[name]
                for key, name in (
                    ("service_namespace", "service.namespace"),
                    ("service_version", "service.version"),
                    ("deployment_environment", "deployment.environment.name"),
                    ("host_name", "host.name"),
                )
                if name in self.resource
            }
            client = PyroscopeClient(settings.pyroscope_endpoint, service, labels)
            self._destinations.append(("pyroscope", client))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread, then export what is left (within ``timeout``)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.export_once()
        self.export_once()  # the last, partial interval

    def export_once(self) -> None:
        """Take the samples and hand them to every destination (never raises)."""
        try:
            window = self.sampler.take()
            self.sampler.flush_stats()
            if not window.counts or not self._destinations:
                return
            from obskit._profiles import pprof

            for destination, target in self._destinations:
                if destination == "directory":
                    data = pprof.encode(window, resource=self.resource)
                    ok = target.write(data, window.start_ns) is not None
                else:  # (without trace_id: Pyroscope makes series of the labels)
                    from obskit._profiles.export import for_pyroscope

                    data = pprof.encode(for_pyroscope(window), resource=self.resource)
                    ok = target.send(data, window.start_ns, window.end_ns, self.sampler.hz)
                outcome = "ok" if ok else "error"
                _self_stats.add("obskit_profiler_exports", destination=destination, outcome=outcome)
        except Exception as error:
            _internal_errors.report("profiles", error)
