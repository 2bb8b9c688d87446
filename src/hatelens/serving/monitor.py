"""The prediction log read back in time windows: volume, flagged rate by group, FPR / FNR by group
where reviewers gave feedback, and drift of the score distribution against a reference run.

Drift is the population stability index, PSI = sum over bins of (cur - ref) * ln(cur / ref), with
bins at the deciles of the reference scores (an empty bin counts as 0.0001 of its side). Under 0.1
is usually read as stable, 0.1-0.2 as a moderate shift, over 0.2 as a shift worth a look.

An alert fires when, in a window, a group's flagged rate or FPR, or a PSI, crosses its limit
(MonitorConfig); figures from fewer rows than the minimums are shown but never alert.
"""

import math
import re
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from hatelens.config import MonitorConfig
from hatelens.data.formats import iter_jsonl_lines, loads_line, preview, read_utf8
from hatelens.data.labels import HATE, NORMAL
from hatelens.errors import ConfigError, DataError
from hatelens.report.formatting import num, percent
from hatelens.serving.prediction_log import Prediction, PredictionLog

ALL = "all"  # the row of a window that covers every group
EMPTY_SHARE = 1e-4  # a PSI bin with no scores counts as this share, so ln() stays finite
_DURATION = re.compile(r"\A(\d+)([mhdw])\Z")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_DURATION = timedelta(days=100 * 365)  # longer windows or look-backs overflow datetime arithmetic


@dataclass
class GroupStats:
    """One group (or ALL) in one window."""

    n: int
    flagged: int  # predictions of "hate"
    reviewed_normal: int  # feedback says normal
    false_positives: int  # ... and the server said hate
    reviewed_hate: int
    false_negatives: int
    psi: float | None = None  # score drift against the reference; None without reference or scores

    @property
    def flagged_rate(self) -> float | None:
        return self.flagged / self.n if self.n else None

    @property
    def fpr(self) -> float | None:
        return self.false_positives / self.reviewed_normal if self.reviewed_normal else None

    @property
    def fnr(self) -> float | None:
        return self.false_negatives / self.reviewed_hate if self.reviewed_hate else None


@dataclass
class Window:
    start: datetime
    end: datetime
    groups: dict[str, GroupStats]  # ALL first, then groups by name


@dataclass
class MonitorReport:
    config: MonitorConfig
    windows: list[Window]
    alerts: list[str]
    reference_rows: int = 0
    model_versions: list[str] = field(default_factory=list)


def parse_duration(text: str) -> timedelta:
    """'30m', '6h', '1d', '1w' -> timedelta, at most MAX_DURATION."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"window/duration {text!r} is not a positive number with m, h, d or w (e.g. 1d, 6h)")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        raise ConfigError(f"window/duration {text!r} is longer than {MAX_DURATION.days // 365} years; "
                          "use a shorter one (e.g. 1w, 365d)")
    return duration


def parse_since(text: str, now: datetime) -> datetime:
    """A duration back from now ('7d') or a UTC date/time ('2025-01-31', '2025-01-31T12:00')."""
    if _DURATION.match(text.strip()):
        try:
            return now - parse_duration(text)
        except OverflowError:  # before the year 1
            raise ConfigError(f"since {text!r} reaches back before the year 1; use a shorter duration") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"since {text!r} is neither a duration (7d) nor an ISO date (2025-01-31)") from None
    try:
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except OverflowError:
        raise ConfigError(f"since {text!r} is out of range in UTC; pick a later date") from None


def reference_scores(path: str) -> list[tuple[str, float]]:
    """(group, score) of every scored row in a run folder's predictions.jsonl (or that file itself)."""
    file = Path(path)
    file = file / "predictions.jsonl" if file.is_dir() else file
    if not file.is_file():
        raise ConfigError(f"reference {path}: no predictions.jsonl there; pass a run folder that "
                          "`hatelens evaluate` wrote")
    rows = []
    for line_number, line in iter_jsonl_lines(read_utf8(file)):
        where = f"{file}:{line_number}"
        row = loads_line(line, where)
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a prediction object, found {preview(row)}; pass a run's "
                            "predictions.jsonl")
        score = row.get("score")
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
            raise DataError(f"{where}: score {preview(score)} is not a number between 0 and 1; pass a run's "
                            "predictions.jsonl")
        group = row.get("group")
        rows.append((group if isinstance(group, str) and group else "unknown", float(score)))
    if not rows:
        raise DataError(f"{file} holds no scores (a generate-mode run?); use a score-mode run as the reference")
    return rows


def psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> float | None:
    """Population stability index of `current` against `reference`; None when either is empty."""
    if not reference or not current:
        return None
    ordered = sorted(reference)
    cuts = sorted({ordered[min(len(ordered) - 1, int(len(ordered) * k / bins))] for k in range(1, bins)})

    def shares(values):
        counts = [0] * (len(cuts) + 1)
        for value in values:
            counts[bisect_right(cuts, value)] += 1
        return [max(count / len(values), EMPTY_SHARE) for count in counts]

    return sum((cur - ref) * math.log(cur / ref) for ref, cur in zip(shares(reference), shares(current)))


def window_start(moment: datetime, length: timedelta) -> datetime:
    """Windows are aligned to the Unix epoch in UTC: 1d windows start at midnight UTC."""
    seconds = length.total_seconds()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + timedelta(seconds=math.floor((moment - epoch).total_seconds() / seconds) * seconds)


def _stats(rows: Sequence[Prediction]) -> GroupStats:
    reviewed_normal = [row for row in rows if row.true_label == NORMAL]
    reviewed_hate = [row for row in rows if row.true_label == HATE]
    return GroupStats(
        n=len(rows), flagged=sum(row.label == HATE for row in rows),
        reviewed_normal=len(reviewed_normal), false_positives=sum(row.label == HATE for row in reviewed_normal),
        # an invalid answer (label None) flagged nothing: for a hateful post it is a miss
        reviewed_hate=len(reviewed_hate), false_negatives=sum(row.label != HATE for row in reviewed_hate))


def summarize(predictions: Sequence[Prediction], config: MonitorConfig,
              reference: Sequence[tuple[str, float]] | None = None) -> MonitorReport:
    """Windows, per-group figures, drift and alerts from logged predictions (oldest first)."""
    length = parse_duration(config.window)
    reference_by_group = defaultdict(list)
    for group, score in reference or ():
        reference_by_group[group].append(score)
        reference_by_group[ALL].append(score)
    windows = []
    if predictions:
        start, last = window_start(predictions[0].created_utc, length), predictions[-1].created_utc
        by_window = defaultdict(list)
        for row in predictions:
            by_window[window_start(row.created_utc, length)].append(row)
        while start <= last:  # empty windows stay in the report: a gap in traffic is news too
            windows.append(_window(start, length, by_window.get(start, []), reference_by_group, config))
            start += length
    alerts = [alert for window in windows for alert in _alerts(window, config)]
    versions = sorted({row.model_version for row in predictions})
    return MonitorReport(config=config, windows=windows, alerts=alerts, reference_rows=len(reference or ()),
                         model_versions=versions)


def _window(start, length, rows, reference_by_group, config) -> Window:
    by_group = defaultdict(list)
    for row in rows:
        by_group[row.group].append(row)
    groups = {ALL: _stats(rows), **{group: _stats(by_group[group]) for group in sorted(by_group)}}
    for group, stats in groups.items():
        scores = [row.score for row in (rows if group == ALL else by_group[group]) if row.score is not None]
        if reference_by_group.get(group) and scores:
            stats.psi = psi(reference_by_group[group], scores, config.psi_bins)
    return Window(start=start, end=start + length, groups=groups)


def _alerts(window: Window, config: MonitorConfig) -> list[str]:
    when = f"{window.start:%Y-%m-%d %H:%M}Z"
    alerts = []
    for group, stats in window.groups.items():
        name = "all groups" if group == ALL else f"group {group}"
        if stats.n >= config.min_rows and group != ALL and stats.flagged_rate > config.max_group_flagged_rate:
            alerts.append(f"{when} {name}: flagged rate {stats.flagged_rate:.1%} > {config.max_group_flagged_rate:.1%} "
                          f"({stats.flagged} of {stats.n})")
        if stats.reviewed_normal >= config.min_feedback and group != ALL and stats.fpr > config.max_group_fpr:
            alerts.append(f"{when} {name}: FPR {stats.fpr:.1%} > {config.max_group_fpr:.1%} "
                          f"({stats.false_positives} of {stats.reviewed_normal} reviewed normal posts flagged)")
        if stats.n >= config.min_rows and stats.psi is not None and stats.psi > config.max_psi:
            alerts.append(f"{when} {name}: score drift PSI {stats.psi:.3f} > {config.max_psi:.3f}")
    return alerts


def monitor(config: MonitorConfig, *, now: datetime | None = None) -> MonitorReport:
    """Read the log named by the config (and its reference run) and summarise it."""
    now = now or datetime.now(timezone.utc)
    parse_duration(config.window)  # a bad window fails before any reading
    since = parse_since(config.since, now) if config.since else None
    predictions = PredictionLog(config.db, create=False).read(since=since)
    reference = reference_scores(config.reference) if config.reference else None
    return summarize(predictions, config, reference)


# -- output ---------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return percent(value, sign=False, missing="–")


def _number(value: float | None) -> str:
    return num(value, missing="–")


COLUMNS = ("window (UTC)", "group", "n", "flagged", "reviewed", "FPR", "FNR", "PSI")


def _table_rows(report: MonitorReport) -> list[list[str]]:
    rows = []
    for window in report.windows:
        for group, stats in window.groups.items():
            rows.append([f"{window.start:%Y-%m-%d %H:%M}", group, str(stats.n), _percent(stats.flagged_rate),
                         str(stats.reviewed_normal + stats.reviewed_hate), _percent(stats.fpr), _percent(stats.fnr),
                         _number(stats.psi)])
    return rows


def _header_lines(report: MonitorReport) -> list[str]:
    config = report.config
    reference = f"{config.reference} ({report.reference_rows} scores)" if config.reference else "none (no drift figures)"
    return [f"Log: {config.db}; window {config.window}" + (f"; since {config.since}" if config.since else ""),
            f"Model versions: {', '.join(report.model_versions) or 'none logged'}",
            f"Reference: {reference}",
            f"Limits: group flagged rate {config.max_group_flagged_rate:.0%} (n >= {config.min_rows}), group FPR "
            f"{config.max_group_fpr:.0%} (>= {config.min_feedback} reviewed normal posts), PSI {config.max_psi}"]


def render_markdown(report: MonitorReport) -> str:
    lines = ["# hatelens monitor", ""] + [f"- {line}" for line in _header_lines(report)] + [""]
    lines += ["## Alerts", ""] + ([f"- **ALERT** {alert}" for alert in report.alerts] or ["None."]) + [""]
    lines += ["## Windows", ""]
    if not report.windows:
        return "\n".join(lines + ["No predictions logged in this period."]) + "\n"
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(report)]
    lines += ["", "flagged: share predicted hate. reviewed: predictions with feedback; FPR / FNR over those. "
                  "PSI: score drift against the reference (> 0.2: shifted)."]
    return "\n".join(lines) + "\n"


def render_html(report: MonitorReport) -> str:
    from html import escape

    alerts = "".join(f"<li class=alert>{escape(alert)}</li>" for alert in report.alerts) or "<li>None.</li>"
    header = "".join(f"<li>{escape(line)}</li>" for line in _header_lines(report))
    head = "".join(f"<th>{escape(column)}</th>" for column in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in _table_rows(report))
    table = f"<table><tr>{head}</tr>{body}</table>" if report.windows else "<p>No predictions logged in this period.</p>"
    return ("<!doctype html><html><head><meta charset=utf-8><title>hatelens monitor</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}.alert{color:#b00;font-weight:bold}"
            f"</style></head><body><h1>hatelens monitor</h1><ul>{header}</ul><h2>Alerts</h2><ul>{alerts}</ul>"
            f"<h2>Windows</h2>{table}</body></html>\n")
