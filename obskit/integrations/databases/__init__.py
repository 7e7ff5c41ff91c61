"""Database calls: CLIENT spans and latency for DB-API drivers and SQLAlchemy."""
