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
