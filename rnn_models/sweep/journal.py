"""The sweep journal: every finished unit recorded the moment it arrives, safe against a kill.

SQLite in write-ahead-log mode with ``synchronous = FULL``: a unit is either wholly recorded
(its transaction committed) or not at all, whatever kills the driver.  Only the driver writes.
Rows are keyed by the unit's content hash (:func:`rnn_models.sweep.units.unit_key`); a finished
unit is never replaced (a unit that ran twice -- e.g. re-run after its worker died after
finishing -- is counted once), a failed one is replaced when it later succeeds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from crossbar.errors import CrossbarInputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result TEXT,
    error TEXT,
    seconds REAL,
    worker TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
FORMAT = "crossbar.sweep_journal/1"


class Journal:
    """Finished and failed units of one sweep folder (``DIR/journal.sqlite``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            # one statement, so that two processes opening a new journal at once cannot both insert
            self.db.execute("INSERT OR IGNORE INTO info VALUES ('format', ?)", (FORMAT,))
            fmt = self.db.execute("SELECT value FROM info WHERE name='format'").fetchone()
            if fmt[0] != FORMAT:
                raise CrossbarInputError(f"{self.path}: a journal of format {fmt[0]!r}; this code reads {FORMAT}")
        except sqlite3.DatabaseError as exc:
            raise CrossbarInputError(f"{self.path}: not a usable sweep journal ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def done(self) -> dict[str, dict]:
        """key -> result of every finished unit."""
        return {k: json.loads(r) for k, r in self.db.execute("SELECT key, result FROM units WHERE status='done'")}

    def failed(self) -> dict[str, str]:
        """key -> error message of every failed (and not since finished) unit."""
        return dict(self.db.execute("SELECT key, error FROM units WHERE status='failed'"))

    def record(self, key: str, result: dict) -> bool:
        """Record a finished unit; False when it was already recorded (a duplicate run)."""
        cur = self.db.execute(
            "INSERT INTO units VALUES (?, 'done', ?, NULL, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "status='done', result=excluded.result, error=NULL, seconds=excluded.seconds, worker=excluded.worker, "
            "recorded_at=excluded.recorded_at WHERE units.status != 'done'",
            (key, json.dumps(result), result.get("seconds"), result.get("worker"), time.time()),
        )
        return cur.rowcount > 0

    def record_failure(self, key: str, error: str) -> None:
        """Record a failed unit (never over a finished one)."""
        self.db.execute(
            "INSERT INTO units VALUES (?, 'failed', NULL, ?, NULL, NULL, ?) ON CONFLICT(key) DO UPDATE SET "
            "error=excluded.error, recorded_at=excluded.recorded_at WHERE units.status = 'failed'",
            (key, error[:2000], time.time()),
        )
