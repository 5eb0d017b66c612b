"""Delivery ids already forwarded, in SQLite, so a replayed webhook starts nothing new.

On disk rather than in memory: a relay restart must not forget what it already forwarded. An id is
claimed before the event is posted and released again if posting fails, so the sender's retry (or a
person's "Redeliver") goes through.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["Deliveries"]


class Deliveries:
    def __init__(self, path: Path | str, *, keep_s: float = 30 * 24 * 3600) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries "
            "(source TEXT, id TEXT, received REAL, PRIMARY KEY (source, id))"
        )
        self._lock = threading.Lock()
        self._keep_s = keep_s

    def claim(self, source: str, delivery_id: str) -> bool:
        """True the first time this (source, id) is seen; False for a repeat."""
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM deliveries WHERE received < ?", (now - self._keep_s,))
            cur = self._db.execute(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?)", (source, delivery_id, now)
            )
            return cur.rowcount == 1

    def release(self, source: str, delivery_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM deliveries WHERE source = ? AND id = ?", (source, delivery_id))

    def close(self) -> None:
        self._db.close()
