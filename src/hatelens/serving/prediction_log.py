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
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from hatelens.data.labels import HATE, NORMAL
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
USER_VERSION = 1  # PRAGMA user_version of a file hatelens made: how the monitor knows a log from a stranger
LOG_COLUMNS = {  # what a file must hold to be read as a log
    "predictions": ("id", "request_id", "position", "created_utc", "text_sha256", "text", "group_name", "score",
                    "label", "threshold", "model_version"),
    "feedback": ("prediction_id", "label", "created_utc", "reviewer"),
}
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
    """Append predictions, record feedback, read both back.

    create=True (the server): a new or empty file becomes a log; an existing file must be one. create=False
    (the monitor): the file is opened read-only and must be a log; nothing in it is ever changed.
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        self.read_only = not create
        if self.path.is_dir():
            raise ConfigError(f"prediction log {self.path} is a folder; pass a file path such as predictions.sqlite")
        if self.read_only:
            self._check_readable()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        with closing(self._connect()) as connection:
            if not is_new:
                self._check_ours(connection)  # before anything is written: a foreign file stays as it was
            try:
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                with connection:
                    connection.executescript(SCHEMA + f"PRAGMA user_version = {USER_VERSION};")
            except sqlite3.DatabaseError as error:
                raise ConfigError(f"{self.path} is not a SQLite prediction log ({error}); "
                                  "pass a new path or one that `hatelens serve` wrote") from None
            if mode.lower() != "wal":
                raise ConfigError(f"{self.path}: SQLite refused WAL mode ({mode}); put the log on a local disk")

    def _check_readable(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"prediction log {self.path} not found; `hatelens serve --db {self.path}` writes one")
        if self.path.stat().st_size == 0:
            raise ConfigError(f"prediction log {self.path} is empty (0 bytes), not a log; pass the file that "
                              "`hatelens serve --db` wrote")
        with closing(self._connect()) as connection:
            self._check_ours(connection)

    def _check_ours(self, connection: sqlite3.Connection) -> None:
        """ConfigError unless the file holds hatelens's tables (and no other application's user_version)."""
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            columns = {table: {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                       for table in LOG_COLUMNS}
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"cannot open prediction log {self.path} ({error}); pass a new path or one "
                              "that `hatelens serve` wrote") from None
        missing = [f"{table}.{name}" for table, names in LOG_COLUMNS.items() for name in names
                   if name not in columns[table]]
        if version not in (0, USER_VERSION) or missing:  # 0: logs written before the version mark
            found = f"user_version {version}" if version not in (0, USER_VERSION) else f"no {missing[0]}"
            raise ConfigError(f"{self.path} is not a hatelens prediction log ({found}); hatelens leaves it "
                              "untouched: pass the file that `hatelens serve --db` wrote, or a new path")

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.read_only:  # mode=ro: SQLite itself refuses any write, WAL switch or new table
                connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                             timeout=BUSY_TIMEOUT_MS / 1000)
            else:
                connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as error:
            raise ConfigError(f"cannot open prediction log {self.path} ({error}); check the path and its "
                              "permissions") from None
        try:
            if not self.read_only:
                connection.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses at most the last commit
                connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA schema_version").fetchone()  # reads the header: fails on a non-database
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
        return [self._prediction(row) for row in rows]

    def _prediction(self, row: tuple) -> Prediction:
        """A row as a Prediction; DataError naming the row when a value is not what the server writes."""
        fix = "fix or delete that row (the server never writes one like it)"
        try:
            created = parse_time(row[3])
        except (TypeError, ValueError):
            raise DataError(f"{self.path}: prediction {row[0]!r} has created_utc {row[3]!r}, not ISO 8601 UTC "
                            f"like 2025-01-31T12:00:00.000000Z; {fix}") from None
        for name, value in (("score", row[7]), ("threshold", row[9])):
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise DataError(f"{self.path}: prediction {row[0]!r} has {name} {value!r}, not a number; {fix}")
        for name, value in (("label", row[8]), ("feedback label", row[11])):
            if value not in (HATE, NORMAL, None):
                raise DataError(f"{self.path}: prediction {row[0]!r} has {name} {value!r}, not hate or normal; {fix}")
        return Prediction(id=row[0], request_id=row[1], position=row[2], created_utc=created, text_sha256=row[4],
                          text=row[5], group=str(row[6]), score=row[7], label=row[8], threshold=row[9],
                          model_version=str(row[10]), true_label=row[11])
