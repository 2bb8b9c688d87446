"""The prediction log: one SQLite file (WAL mode) holding every prediction the server made and the
reviewed labels that came back for some of them.

Tables
  predictions  id ("<request id>-<position>"), request_id, position, created_utc (ISO 8601, UTC,
               sortable as text), text_sha256, text (only when the server runs with --log-text),
               group_name, score, label ("hate" / "normal" / NULL for an invalid answer), threshold,
               model_version
  feedback     prediction_id, label (the reviewed true label), created_utc, reviewer

Each call opens its own short-lived connection, so the server's batch thread and its request
handlers never share one; WAL lets the monitor read while the server writes.
"""

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from hatelens.errors import ConfigError, DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    created_utc TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    text TEXT,
    group_name TEXT NOT NULL,
    score REAL,
    label TEXT,
    threshold REAL,
    model_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_utc);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY REFERENCES predictions (id),
    label TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    reviewer TEXT
);
"""
BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another writer before giving up


@dataclass(frozen=True)
class Prediction:
    """One logged prediction; `true_label` is the reviewed label from feedback, if any."""

    id: str
    request_id: str
    position: int
    created_utc: datetime
    text_sha256: str
    text: str | None
    group: str
    score: float | None
    label: str | None
    threshold: float | None
    model_version: str
    true_label: str | None = None


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds: text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("prediction log times must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


class PredictionLog:
    """Append predictions, record feedback, read both back."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigError(f"prediction log {self.path} not found; `hatelens serve --db {self.path}` writes one")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            try:
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                with connection:
                    connection.executescript(SCHEMA)
            except sqlite3.DatabaseError as error:
                raise ConfigError(f"{self.path} is not a SQLite prediction log ({error}); "
                                  "pass a new path or one that `hatelens serve` wrote") from None
            if mode.lower() != "wal":
                raise ConfigError(f"{self.path}: SQLite refused WAL mode ({mode}); put the log on a local disk")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            connection.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses at most the last commit
            connection.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise ConfigError(f"cannot open prediction log {self.path} ({error}); pass a new path or one "
                              "that `hatelens serve` wrote") from None
        return connection

    def append(self, predictions: Sequence[Prediction]) -> None:
        """Write a batch of predictions in one transaction."""
        rows = [(p.id, p.request_id, p.position, format_time(p.created_utc), p.text_sha256, p.text, p.group,
                 p.score, p.label, p.threshold, p.model_version) for p in predictions]
        with closing(self._connect()) as connection, connection:
            connection.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_feedback(self, prediction_id: str, label: str, *, reviewer: str | None = None,
                     created_utc: datetime | None = None) -> None:
        """Record (or replace) the reviewed label of a logged prediction; DataError if it is not logged."""
        moment = format_time(created_utc or datetime.now(timezone.utc))
        with closing(self._connect()) as connection, connection:
            found = connection.execute("SELECT 1 FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
            if found is None:
                raise DataError(f"no logged prediction with id {prediction_id!r}; use an id that /v1/classify returned")
            connection.execute("INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?)",
                               (prediction_id, label, moment, reviewer))

    def read(self, *, since: datetime | None = None, until: datetime | None = None) -> list[Prediction]:
        """Predictions with created_utc in [since, until), oldest first, with their feedback labels."""
        query = ("SELECT p.id, p.request_id, p.position, p.created_utc, p.text_sha256, p.text, p.group_name, "
                 "p.score, p.label, p.threshold, p.model_version, f.label "
                 "FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id WHERE 1 = 1")
        parameters = []
        if since is not None:
            query += " AND p.created_utc >= ?"
            parameters.append(format_time(since))
        if until is not None:
            query += " AND p.created_utc < ?"
            parameters.append(format_time(until))
        with closing(self._connect()) as connection:
            try:
                rows = connection.execute(query + " ORDER BY p.created_utc, p.id", parameters).fetchall()
            except sqlite3.DatabaseError as error:
                raise DataError(f"{self.path} is not a hatelens prediction log ({error})") from None
        return [Prediction(id=row[0], request_id=row[1], position=row[2], created_utc=parse_time(row[3]),
                           text_sha256=row[4], text=row[5], group=row[6], score=row[7], label=row[8],
                           threshold=row[9], model_version=row[10], true_label=row[11]) for row in rows]
