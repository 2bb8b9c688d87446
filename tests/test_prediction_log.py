"""The SQLite prediction log: WAL mode, round trips, feedback, time filters, bad files."""

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from hatelens.errors import ConfigError, DataError
from hatelens.serving.prediction_log import Prediction, PredictionLog, text_sha256

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def prediction(index: int, *, at: datetime = T0, group: str = "lgbtq", label: str | None = "hate",
               score: float | None = 0.8, text: str | None = None) -> Prediction:
    return Prediction(id=f"req{index}-0", request_id=f"req{index}", position=0, created_utc=at,
                      text_sha256=text_sha256(f"text {index}"), text=text, group=group, score=score, label=label,
                      threshold=0.5 if score is not None else None, model_version="m+adapter:abc")


def test_the_log_is_in_wal_mode_and_round_trips_every_field(tmp_path):
    path = tmp_path / "log" / "predictions.sqlite"
    log = PredictionLog(path)
    written = [prediction(1, text="text 1"), prediction(2, label=None, score=None, group="unknown")]
    log.append(written)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert PredictionLog(path, create=False).read() == written


def test_feedback_attaches_to_its_prediction_and_a_second_review_replaces_the_first(tmp_path):
    log = PredictionLog(tmp_path / "p.sqlite")
    log.append([prediction(1), prediction(2)])
    log.add_feedback("req1-0", "normal", reviewer="a")
    log.add_feedback("req1-0", "hate", reviewer="b")
    assert {row.id: row.true_label for row in log.read()} == {"req1-0": "hate", "req2-0": None}
    with pytest.raises(DataError, match="no logged prediction with id 'req9-0'"):
        log.add_feedback("req9-0", "hate")


def test_read_keeps_the_time_range_asked_for_oldest_first(tmp_path):
    log = PredictionLog(tmp_path / "p.sqlite")
    log.append([prediction(i, at=T0 + timedelta(hours=i)) for i in (3, 1, 2, 0)])
    rows = log.read(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [row.id for row in rows] == ["req1-0", "req2-0"]
    # another time zone names the same instant
    east = timezone(timedelta(hours=5))
    assert [row.id for row in log.read(since=(T0 + timedelta(hours=3)).astimezone(east))] == ["req3-0"]


def test_readers_are_not_blocked_by_an_open_write(tmp_path):
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    log.append([prediction(1)])
    writer = sqlite3.connect(path)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE predictions SET label = 'normal'")
    assert [row.label for row in log.read()] == ["hate"]  # WAL: the reader sees the last commit
    writer.rollback()
    writer.close()


def test_a_file_that_is_not_a_log_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=r"cannot open prediction log .*junk.sqlite \(file is not a database\)"):
        PredictionLog(junk)
    with pytest.raises(ConfigError, match="prediction log .*missing.sqlite not found; `hatelens serve --db"):
        PredictionLog(tmp_path / "missing.sqlite", create=False)


def foreign_database(path):
    """Another application's SQLite file, in rollback-journal mode."""
    other = sqlite3.connect(path)
    other.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
                        "INSERT INTO customers (name) VALUES ('ada'); PRAGMA user_version = 7;")
    other.close()
    return path


@pytest.mark.parametrize("create", [False, True])
def test_another_application_s_database_is_refused_and_left_untouched(tmp_path, create):
    path = foreign_database(tmp_path / "app.sqlite")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"app.sqlite is not a hatelens prediction log \(user_version 7\); "
                                          "hatelens leaves it untouched"):
        PredictionLog(path, create=create)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]  # no -wal / -shm either


def test_a_database_without_the_log_tables_is_refused(tmp_path):
    path = tmp_path / "half.sqlite"
    sqlite3.connect(path).executescript("CREATE TABLE predictions (id TEXT);")
    with pytest.raises(ConfigError, match=r"half.sqlite is not a hatelens prediction log \(no predictions.request_id"):
        PredictionLog(path, create=False)


def test_the_monitor_refuses_an_empty_file_and_leaves_it_empty(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(ConfigError, match=r"empty.sqlite is empty \(0 bytes\), not a log"):
        PredictionLog(path, create=False)
    assert path.stat().st_size == 0


def test_reading_never_writes(tmp_path):
    path = tmp_path / "p.sqlite"
    PredictionLog(path).append([prediction(1)])
    log = PredictionLog(path, create=False)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        with log._connect() as connection:
            connection.execute("CREATE TABLE intruder (x)")
    assert [row.id for row in log.read()] == ["req1-0"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1


@pytest.mark.parametrize(("column", "value", "message"), [
    ("created_utc", "31/01/2025 12:00", "has created_utc '31/01/2025 12:00', not ISO 8601 UTC"),
    ("score", "high", "has score 'high', not a number"),
    ("label", "HATE", "has label 'HATE', not hate or normal"),
])  # fmt: skip
def test_rows_the_server_never_writes_are_clear_errors(tmp_path, column, value, message):
    path = tmp_path / "p.sqlite"
    PredictionLog(path).append([prediction(1)])
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE predictions SET {column} = ?", (value,))
    with pytest.raises(DataError, match=f"p.sqlite: prediction 'req1-0' {message}"):
        PredictionLog(path, create=False).read()
