"""The catalog as the hub process reads it (for spawn forms), cached by version.

The hub service owns the store (migrates it, writes it); the spawners in
the hub process only read. A reader asks the store's version (one small
query) and reloads the entries only when an admin changed something, so
an edit applies to the next spawn without a restart, and a busy hub does
not reload 200 entries per spawn form.
"""

from __future__ import annotations

import threading

from sqlalchemy.exc import OperationalError, ProgrammingError

from ..errors import Unavailable
from ..store.catalog import CatalogStore
from ..store.schema import open_engine
from .access import Catalog

_readers: dict[str, "CatalogReader"] = {}
_lock = threading.Lock()


class CatalogReader:
    def __init__(self, url: str):
        self.store = CatalogStore(open_engine(url))
        self._version = None
        self._catalog = Catalog()

    @classmethod
    def for_url(cls, url: str) -> "CatalogReader":
        """One reader (one engine) per store URL in this process."""
        with _lock:
            if url not in _readers:
                _readers[url] = cls(url)
            return _readers[url]

    def current(self) -> Catalog:
        try:
            version = self.store.version()
            if version != self._version:
                self._catalog = self.store.catalog()
                self._version = version
        except (OperationalError, ProgrammingError) as e:
            raise Unavailable(
                "The catalog is not ready yet (the kubeai service creates it when it starts); "
                "try again in a moment."
            ) from e
        return self._catalog
