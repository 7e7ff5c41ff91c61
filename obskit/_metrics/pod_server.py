"""The pod's ``/metrics`` under gunicorn: one small server process, started by the master.

gunicorn's master forks the workers and must never die of telemetry, so it serves
nothing itself: :func:`launch` (called from obskit's ``on_starting`` hook) starts
``python -m obskit._metrics.pod_server`` beside it. That process reads every worker's
metric files (prometheus-client's multiprocess directory, with obskit's exemplars),
serves them merged on ``metrics_port``, and exits when the master is gone (its parent
changes) or stops it (:func:`stop`, from ``on_exit``). A scrape that fails or a crash
costs a scrape, never the master or a worker. ``Ctrl-C`` in a terminal is left to the
master (the server ignores ``SIGINT`` and leaves with it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

_log = logging.getLogger("obskit")

#: Seconds between two checks that the master is still there.
PARENT_CHECK_SECONDS = 0.5
#: Seconds a drop counted by a worker keeps ``obskit_multiprocess_ok`` at 0.
RECENT_SECONDS = 5.0
#: Seconds :func:`stop` waits for the server process to leave.
STOP_SECONDS = 2.0


def launch(addr: str, port: int) -> subprocess.Popen[bytes] | None:
    """In gunicorn's master: start the server process (``None``, logged, if it cannot)."""
    import obskit

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(obskit.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "obskit._metrics.pod_server", addr, str(port), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except OSError as error:
        _log.warning("obskit: cannot start the /metrics server process (%s)", error)
        return None


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """In gunicorn's master, at exit: stop the server process (never raises)."""
    if process is None:
        return
    try:
        process.terminate()
        process.wait(STOP_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        with contextlib.suppress(OSError):  # gone (gunicorn reaps every child of the master)
            process.kill()


class DropWatch:
    """Whether some worker failed to write a metric update lately.

    A worker knows when its own writes fail; this process has none of its own, so it
    watches the drop counts in the workers' counter files (which keep room for them):
    a count that grew within :data:`RECENT_SECONDS` makes ``obskit_multiprocess_ok`` 0.
    """

    def __init__(self, path: str) -> None:
        from obskit._metrics.multiprocess import dropped_metric_updates

        self._read = dropped_metric_updates
        self._path = path
        self._last = self._read(path)
        self._grew: tuple[float, str] | None = None

    def check(self) -> None:
        """Read the counts; remember when and why they last grew."""
        now = self._read(self._path)
        for reason, total in now.items():
            if total > self._last.get(reason, 0.0):
                self._grew = (time.monotonic(), reason)
        self._last = now

    def recent_problem(self) -> str | None:
        """The reason of a drop counted within :data:`RECENT_SECONDS`, else None."""
        grew = self._grew
        if grew is not None and time.monotonic() - grew[0] < RECENT_SECONDS:
            return grew[1]
        return None


def _install_logs() -> None:
    """obskit's log lines for this process's own warnings (plain if the settings are bad)."""
    from obskit._config.settings import load
    from obskit._logs import install
    from obskit.exceptions import ConfigError

    try:
        settings = load(os.environ, {})
    except ConfigError:
        logging.basicConfig(level=logging.WARNING)  # the workers report the setting
        return
    install.install(settings, {})


def _answer_dumps_by_signalling(master: int) -> None:
    """``/debug/dump`` here: ``SIGUSR1`` to the master, which passes it to every worker
    (each writes its own dump); only while the workers take ``SIGUSR1`` as the dump signal."""
    from obskit._config.settings import load_only
    from obskit._dumps import endpoint
    from obskit.exceptions import ConfigError

    try:
        wanted = load_only(os.environ, "dumps", "dump_signal", "disabled")
    except ConfigError:  # the workers report the setting
        wanted = {"dumps": False}

    def signal_master() -> tuple[str, dict[str, object]]:
        if not wanted["dumps"] or wanted.get("disabled"):
            return "404 Not Found", {"error": "dumps are off (the dumps setting)"}
        if wanted["dump_signal"] != "sigusr1":
            return "409 Conflict", {
                "error": "the workers' dump signal is not SIGUSR1: send it to each worker"
            }
        os.kill(master, signal.SIGUSR1)
        return "202 Accepted", {
            "signalled": f"gunicorn master (pid {master}), which passes SIGUSR1 to every worker",
            "written_to": "each worker's log (logger obskit.dumps)",
        }

    endpoint.answer = signal_master


def main(argv: Sequence[str]) -> int:
    """Serve the pod's merged metrics on ``argv = (addr, port, master pid)`` until the
    master is gone."""
    addr, port, master = argv[0], int(argv[1]), int(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _install_logs()
    from prometheus_client import CollectorRegistry

    from obskit._metrics.multiprocess import exposition_registry
    from obskit._metrics.server import MetricsServer

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    watch = DropWatch(path) if path else None
    registry = CollectorRegistry()
    if path and watch is not None:
        registry = exposition_registry(path, watch.recent_problem)
    _answer_dumps_by_signalling(master)
    server = MetricsServer(addr, port, registry)
    server.start(watch_reloader=False)
    while os.getppid() == master:
        time.sleep(PARENT_CHECK_SECONDS)
        if watch is not None:
            watch.check()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
