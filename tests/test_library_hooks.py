"""Library instrumentation is installed when the library is imported (before or after
``init()``), switched by ``disabled_instrumentations`` and by shutdown, and a failing
patch never fails the import."""

from __future__ import annotations

import pytest

import obskit
from tests.servers import run_python


def test_a_library_imported_after_init_is_patched_and_follows_the_settings() -> None:
    """Imported after install(): patched on import; calls see the instrumentation on,
    then off once disabled by the setting, then off after shutdown."""
    code = """
        import sys
        import obskit
        from obskit._lifecycle import library_hooks
        late = library_hooks.Instrumentation(
            "late-library", "tests.apps.late_library", "tests.apps.late_library_patch:patch"
        )
        obskit.init(service_name="hooks", traces_exporter="none", metrics_port=0)
        library_hooks.install((), [late])
        assert "tests.apps.late_library" not in sys.modules
        from tests.apps import late_library, late_library_patch
        assert late_library.fetch(1) == 2
        library_hooks.install(["late-library"], [late])
        assert late_library.fetch(2) == 4
        library_hooks.install([], [late])
        obskit.shutdown()
        assert late_library.fetch(3) == 6
        print(late_library_patch.patches, late_library_patch.calls)
    """
    result = run_python(code, check=True)
    assert result.stdout.strip().splitlines()[-1] == (
        "['tests.apps.late_library'] [(1, True), (2, False), (3, False)]"
    )


def test_a_library_imported_before_init_is_patched_at_once() -> None:
    """Already imported when install() runs: patched then, once, however often init()
    runs again."""
    code = """
        import obskit
        from obskit._lifecycle import library_hooks
        from tests.apps import late_library, late_library_patch
        late = library_hooks.Instrumentation(
            "late-library", "tests.apps.late_library", "tests.apps.late_library_patch:patch"
        )
        for _ in range(3):
            obskit.init(service_name="hooks", traces_exporter="none", metrics_port=0)
            library_hooks.install((), [late])
        assert late_library.fetch(5) == 10
        print(late_library_patch.patches, late_library_patch.calls)
    """
    result = run_python(code, check=True)
    assert result.stdout.strip().splitlines()[-1] == "['tests.apps.late_library'] [(5, True)]"


def test_a_failing_patch_is_reported_and_the_import_succeeds() -> None:
    """A patch that raises is counted as an internal error; the import and the
    library's calls work as without obskit."""
    code = """
        import obskit
        from obskit._lifecycle import library_hooks
        broken = library_hooks.Instrumentation(
            "broken-library", "tests.apps.late_library", "tests.apps.late_library_patch:broken"
        )
        obskit.init(service_name="hooks", traces_exporter="none", metrics_port=0)
        library_hooks.install((), [broken])
        from tests.apps import late_library
        assert late_library.fetch(4) == 8
        from obskit._lifecycle import self_stats
        print(dict(self_stats.snapshot()))
    """
    result = run_python(code, check=True)
    assert "instrumentation.broken-library" in result.stdout.strip().splitlines()[-1]
    assert "the patch failed" in result.stdout


def test_disabled_instrumentations_reads_opentelemetrys_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (OpenTelemetry's variable) fills the
    setting when obskit's own is unset."""
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, sqlite3")
    handle = obskit.init(service_name="hooks", traces_exporter="none")
    assert handle.settings.disabled_instrumentations == ("requests", "sqlite3")
    assert handle.settings.sources["disabled_instrumentations"] == (
        "env OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    )
