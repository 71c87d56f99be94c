"""What the webhook receiver remembers across restarts: deliveries already accepted (so a
replay is refused) and how many deliveries ended each way (``GET /stats``). One SQLite file,
``<ECOCOMPRESS_HOME>/stack/webhooks.db`` by default; a connection per call, so the store is
safe from the threads Starlette runs blocking work in.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE TABLE IF NOT EXISTS counts (
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (source, outcome)
);
"""


class DeliveryStore:
    """Seen delivery ids and outcome counts, kept in one SQLite file."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s)

    def remember(self, source: str, delivery_id: str) -> bool:
        """Record a delivery; False when it was already recorded (a replay)."""
        with closing(self._connect()) as db, db:
            try:
                db.execute(
                    "INSERT INTO deliveries (source, delivery_id, received_at) VALUES (?, ?, ?)",
                    (source, delivery_id, time.time()),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def forget(self, source: str, delivery_id: str) -> None:
        """Drop a delivery whose event could not be handed on, so the sender's retry (same id)
        is not refused as a replay."""
        with closing(self._connect()) as db, db:
            db.execute(
                "DELETE FROM deliveries WHERE source = ? AND delivery_id = ?", (source, delivery_id)
            )

    def prune(self, source: str, older_than_s: float) -> int:
        """Drop ``source``'s deliveries received more than ``older_than_s`` ago; how many."""
        with closing(self._connect()) as db, db:
            cur = db.execute(
                "DELETE FROM deliveries WHERE source = ? AND received_at < ?",
                (source, time.time() - older_than_s),
            )
            return cur.rowcount

    def count(self, source: str, outcome: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO counts (source, outcome, n) VALUES (?, ?, 1) "
                "ON CONFLICT (source, outcome) DO UPDATE SET n = n + 1",
                (source, outcome),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """``{source: {outcome: n}}`` for every outcome seen at least once."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT source, outcome, n FROM counts").fetchall()
        out: dict[str, dict[str, int]] = {}
        for source, outcome, n in rows:
            out.setdefault(source, {})[outcome] = n
        return out
