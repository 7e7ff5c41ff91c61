"""Django's ORM over an instrumented sqlite3 (the test project's database file): one
CLIENT span per query, Django's, while the same connection's direct driver calls are
recorded by the driver."""

from __future__ import annotations

from tests.django_setup import setup_django

setup_django()

from django.db import connection  # noqa: E402

import obskit  # noqa: E402
from obskit.integrations.databases.sqlite3 import TracedConnection  # noqa: E402
from obskit.testing import capture  # noqa: E402
from tests.db_checks import attributes, calls, client_spans  # noqa: E402
from tests.djangoproj.catalog.models import Author  # noqa: E402


def test_django_over_traced_sqlite3_makes_one_span_per_query() -> None:
    """A connection Django opens while obskit runs is sqlite3's traced one; an ORM query
    is one span (Django's attributes) and one observation; a call straight on the driver
    connection is the driver's span."""
    connection.close()
    with capture() as telemetry:
        connection.ensure_connection()  # its set-up statements (PRAGMA): not the point
        assert isinstance(connection.connection, TracedConnection)
        before = calls(telemetry, "sqlite", "SELECT")
        with obskit.span("view"):
            assert list(Author.objects.filter(name="nobody")) == []
            connection.connection.execute("SELECT 1").fetchall()
        orm, direct = client_spans(telemetry)
        assert orm.name == "SELECT catalog_author"
        assert attributes(orm)["db.namespace"] == connection.settings_dict["NAME"]
        assert attributes(orm)["db.query.text"].endswith('WHERE "catalog_author"."name" = %s')
        assert direct.name == "SELECT"
        assert calls(telemetry, "sqlite", "SELECT") - before == 2
    connection.close()
