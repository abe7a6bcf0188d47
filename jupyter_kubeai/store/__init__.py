"""The SQL store of the hub service (SQLAlchemy; SQLite by default, any URL in production).

- :mod:`.tables`: the tables (one place for the schema);
- :mod:`.catalog`: ``CatalogStore``, reading and writing catalog entries;
- ``migrations/``: Alembic migrations; :func:`.schema.upgrade` runs them at start.
"""

import os


def default_db_url() -> str:
    """``$KUBEAI_DB_URL``, else SQLite ``kubeai.sqlite`` in ``$KUBEAI_STATE_DIR``.

    The hub service (which migrates and writes the store) and the spawners
    in the hub process (which read the catalog) both start from this.
    """
    state = os.path.abspath(os.environ.get("KUBEAI_STATE_DIR", ".kubeai"))
    return os.environ.get("KUBEAI_DB_URL") or f"sqlite:///{state}/kubeai.sqlite"
