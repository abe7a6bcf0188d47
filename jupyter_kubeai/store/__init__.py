"""The SQL store of the hub service (SQLAlchemy; SQLite by default, any URL in production).

- :mod:`.tables`: the tables (one place for the schema);
- :mod:`.catalog`: ``CatalogStore``, reading and writing catalog entries;
- ``migrations/``: Alembic migrations; :func:`.schema.upgrade` runs them at start.
"""
