"""Database calls, whichever library makes them: the query's literal-free text and its
operation (:mod:`obskit._db.query_text`), and one timed call — a CLIENT span inside a
trace, the ``db_client_operation_duration_seconds`` histogram always
(:mod:`obskit._db.call`). Django, the DB-API drivers and SQLAlchemy use these."""
