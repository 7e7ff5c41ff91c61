"""Set Django up once for the in-process tests, with a fresh SQLite file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_done = False


def setup_django() -> None:
    global _done
    if _done:
        return
    database = Path(tempfile.mkdtemp(prefix="obskit-django-")) / "db.sqlite3"
    os.environ["DJANGOPROJ_DB"] = str(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.djangoproj.settings"
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()
    call_command("migrate", run_syncdb=True, verbosity=0)
    _done = True
