"""Monitoring on a synthetic prediction log (a real SQLite file) with a known shift on day 3."""

import json
import math
import re
from datetime import datetime, timedelta, timezone

import pytest

from hatelens.cli import main
from hatelens.config import MonitorConfig
from hatelens.errors import ConfigError, DataError
from hatelens.serving.monitor import (
    ALL,
    monitor,
    parse_duration,
    parse_since,
    psi,
    reference_scores,
    render_html,
    render_markdown,
)
from hatelens.serving.prediction_log import Prediction, PredictionLog, text_sha256

DAY1 = datetime(2025, 3, 1, tzinfo=timezone.utc)
GRID = [(i + 0.5) / 50 for i in range(50)]  # 50 scores spread evenly over [0, 1]


def test_psi_of_a_known_shift_matches_the_formula():
    reference = [(i + 0.5) / 10 for i in range(10)]  # one score per decile bin
    assert psi(reference, reference) == pytest.approx(0.0)
    shifted = [0.99] * 10  # everything in the top bin
    expected = 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + (1.0 - 0.1) * math.log(1.0 / 0.1)
    assert psi(reference, shifted) == pytest.approx(expected)
    assert psi(reference, []) is None


def _rows(day: datetime, group: str, scores, *, threshold: float = 0.5, start: int = 0):
    return [Prediction(id=f"{group}-{day:%d}-{i}", request_id=f"{group}-{day:%d}-{i}", position=0,
                       created_utc=day + timedelta(minutes=10 * i), text_sha256=text_sha256(str(i)), text=None,
                       group=group, score=score, label="hate" if score >= threshold else "normal",
                       threshold=threshold, model_version="m") for i, score in enumerate(scores, start=start)]


@pytest.fixture
def log_and_reference(tmp_path):
    """Day 1 looks like the reference; day 2 has no traffic; on day 3 lgbtq scores shift up and
    reviewers mark the 25 lowest-scored lgbtq posts (15 of them flagged) as normal."""
    log = PredictionLog(tmp_path / "predictions.sqlite")
    day3 = DAY1 + timedelta(days=2)
    shifted = [score + 0.3 for score in GRID]  # 40 of 50 at or above 0.5
    log.append(_rows(DAY1, "lgbtq", GRID) + _rows(DAY1, "mexican", GRID)
               + _rows(day3, "lgbtq", shifted) + _rows(day3, "mexican", GRID)
               + _rows(day3, "middle_east", [0.9] * 5))  # too few rows to alert on
    reviewed = sorted(_rows(day3, "lgbtq", shifted), key=lambda row: row.score)[:25]
    for row in reviewed:
        log.add_feedback(row.id, "normal")
    run = tmp_path / "runs" / "reference"
    run.mkdir(parents=True)
    lines = [{"id": f"r{i}", "group": group, "label": "normal", "score": score, "prediction": "normal"}
             for group in ("lgbtq", "mexican") for i, score in enumerate(GRID)]
    (run / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return log.path, run, reviewed


def test_windows_rates_feedback_and_drift(log_and_reference):
    db, run, _ = log_and_reference
    report = monitor(MonitorConfig(db=str(db), reference=str(run), window="1d"))
    assert [window.start for window in report.windows] == [DAY1 + timedelta(days=d) for d in range(3)]
    first, gap, third = report.windows
    assert (first.groups[ALL].n, gap.groups[ALL].n, third.groups[ALL].n) == (100, 0, 105)
    assert first.groups["lgbtq"].flagged_rate == 0.5 and third.groups["lgbtq"].flagged_rate == 40 / 50
    assert first.groups["lgbtq"].psi == pytest.approx(0.0)
    assert third.groups["mexican"].psi == pytest.approx(0.0)
    assert third.groups["lgbtq"].psi > 0.2
    lgbtq = third.groups["lgbtq"]
    assert (lgbtq.reviewed_normal, lgbtq.false_positives) == (25, 15)
    assert lgbtq.fpr == 15 / 25 and lgbtq.fnr is None
    assert first.groups["lgbtq"].fpr is None  # no feedback on day 1
    assert third.groups[ALL].psi == pytest.approx(psi(GRID * 2, [s + 0.3 for s in GRID] + GRID + [0.9] * 5))
    assert report.alerts == [
        f"2025-03-03 00:00Z all groups: score drift PSI {third.groups[ALL].psi:.3f} > 0.200",
        "2025-03-03 00:00Z group lgbtq: flagged rate 80.0% > 60.0% (40 of 50)",
        "2025-03-03 00:00Z group lgbtq: FPR 60.0% > 30.0% (15 of 25 reviewed normal posts flagged)",
        f"2025-03-03 00:00Z group lgbtq: score drift PSI {lgbtq.psi:.3f} > 0.200",
    ]


def test_limits_minimums_and_since_change_what_alerts(log_and_reference):
    db, run, _ = log_and_reference
    relaxed = MonitorConfig(db=str(db), reference=str(run), max_group_flagged_rate=0.85, max_group_fpr=0.65,
                            max_psi=3.0)
    assert monitor(relaxed).alerts == []
    strict_on_few = MonitorConfig(db=str(db), min_rows=5, max_group_flagged_rate=0.95, min_feedback=26)
    assert monitor(strict_on_few).alerts == ["2025-03-03 00:00Z group middle_east: flagged rate 100.0% > 95.0% (5 of 5)"]
    recent = monitor(MonitorConfig(db=str(db), since="2025-03-02"), now=DAY1 + timedelta(days=4))
    assert [window.start.day for window in recent.windows] == [3]
    hourly = monitor(MonitorConfig(db=str(db), window="6h", since="1d"), now=DAY1 + timedelta(days=3))
    assert [window.start.hour for window in hourly.windows] == [0, 6]  # 50 rows, 10 minutes apart: 8 h 10 min


def test_durations_and_dates():
    assert parse_duration("6h") == timedelta(hours=6) and parse_duration("2w") == timedelta(weeks=2)
    now = datetime(2025, 3, 10, tzinfo=timezone.utc)
    assert parse_since("7d", now) == datetime(2025, 3, 3, tzinfo=timezone.utc)
    assert parse_since("2025-03-01T06:00", now) == datetime(2025, 3, 1, 6, tzinfo=timezone.utc)
    for bad in ("1 day", "0d", "d", "5y"):
        with pytest.raises(ConfigError, match="is not a positive number with m, h, d or w"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="neither a duration"):
        parse_since("yesterday", now)


def test_reports_in_markdown_and_html(log_and_reference):
    db, run, _ = log_and_reference
    report = monitor(MonitorConfig(db=str(db), reference=str(run)))
    markdown = render_markdown(report)
    assert "| 2025-03-03 00:00 | lgbtq | 50 | 80.0% | 25 |" in markdown
    assert "| 2025-03-02 00:00 | all | 0 | – | 0 | – | – | – |" in markdown
    assert markdown.count("**ALERT**") == len(report.alerts) == 4
    html = render_html(report)
    assert html.count("<li class=alert>") == 4 and "<td>lgbtq</td>" in html


def test_the_command_exits_1_on_an_alert_and_0_without(log_and_reference, tmp_path, capsys):
    db, run, _ = log_and_reference
    assert main(["monitor", "--db", str(db), "--reference", str(run)]) == 1
    captured = capsys.readouterr()
    assert "# hatelens monitor" in captured.out and captured.err.count("ALERT 2025-03-03") == 4
    output = tmp_path / "report.html"
    assert main(["monitor", "--db", str(db), "--format", "html", "--output", str(output),
                 "max_group_flagged_rate=0.9", "max_group_fpr=0.9", "max_psi=5"]) == 0
    assert output.read_text().startswith("<!doctype html>")
    assert "3 window(s), 0 alert(s)" in capsys.readouterr().out
    assert main(["monitor", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert main(["monitor", "--db", str(db), "--window", "1 day"]) == 2


@pytest.mark.parametrize(("window", "since", "message"), [
    ("9999999999d", None, "window/duration '9999999999d' is longer than 100 years"),
    ("1d", "999999999w", "window/duration '999999999w' is longer than 100 years"),
    ("1d", "36000d", "since '36000d' reaches back before the year 1"),
    ("1d", "31/01/2025", "since '31/01/2025' is neither a duration (7d) nor an ISO date"),
    ("1d", "0001-01-01T00:00+05:00", "since '0001-01-01T00:00+05:00' is out of range in UTC"),
])  # fmt: skip
def test_absurd_windows_and_dates_are_config_errors(log_and_reference, window, since, message):
    db, _, _ = log_and_reference
    now = datetime(60, 1, 1, tzinfo=timezone.utc) if since == "36000d" else None
    with pytest.raises(ConfigError, match=re.escape(message)):
        monitor(MonitorConfig(db=str(db), window=window, since=since), now=now)


@pytest.mark.parametrize(("line", "message"), [
    ('{"group": "lgbtq", "score": "0.4"}', ':2: score "0.4" is not a number between 0 and 1'),
    ('{"group": "lgbtq", "score": NaN}', ":2: score NaN is not a number between 0 and 1"),
    ('[0.4]', ":2: expected a prediction object, found [0.4]"),
    ('{"score": 0.4', ":2: not valid JSON"),
])  # fmt: skip
def test_reference_rows_that_are_not_predictions(tmp_path, line, message):
    file = tmp_path / "predictions.jsonl"
    file.write_text('{"group": "lgbtq", "score": 0.5}\n' + line + "\n")
    with pytest.raises(DataError, match=re.escape(f"{file}{message}")):
        reference_scores(str(file))


def test_reference_with_unicode_line_breaks_in_its_texts(tmp_path):
    file = tmp_path / "predictions.jsonl"
    rows = [{"text": f"a{separator}b", "group": "lgbtq", "score": 0.25} for separator in "\u2028\u2029\u0085"]
    file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert reference_scores(str(file)) == [("lgbtq", 0.25)] * 3
