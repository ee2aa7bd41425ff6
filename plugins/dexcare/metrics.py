"""What a daily run measured, through Airflow's stats client, for the dashboards on-call watches.

Every name starts with :data:`PREFIX` and ends with the report type (``dexcare.load.inserted.virtual``), so a
plain StatsD server tells the types apart; the type is also a ``report_type`` tag for the backends that keep
tags (DogStatsD, StatsD with InfluxDB tags, OpenTelemetry). Values are counts, bytes, ratios and durations:
never a field of a report. A metric that cannot be sent is logged at debug level and never fails the task.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from dexcare.compat import stats_client
from dexcare.load.audit import instant

log = logging.getLogger(__name__)

PREFIX = "dexcare"

#: Per report type, from the load's summary; gauges hold the last load's value.
LOAD_COUNTS = ("rows_in_file", "inserted", "updated")


def _name(metric: str, report_type: str) -> str:
    return f"{PREFIX}.{metric}.{report_type}"


def gauge(metric: str, report_type: str, value: float) -> None:
    try:
        stats_client().gauge(_name(metric, report_type), value, tags={"report_type": report_type})
    except Exception as exc:  # metrics are for watching the run, never a reason to fail it
        log.debug("Could not send metric %s: %s", _name(metric, report_type), type(exc).__name__)


def timing(metric: str, report_type: str, seconds: float) -> None:
    """A StatsD timer (sent in milliseconds, as StatsD timers are)."""
    try:
        stats_client().timing(_name(metric, report_type), dt.timedelta(seconds=seconds),
                              tags={"report_type": report_type})
    except Exception as exc:
        log.debug("Could not send metric %s: %s", _name(metric, report_type), type(exc).__name__)


def report_waited(report_type: str, seconds: float) -> None:
    """The sensor's wait, from its first check of the report (the request was just sent) to SUCCEEDED."""
    timing("report.wait", report_type, seconds)


def downloaded(report_type: str, size: int, seconds: float) -> None:
    gauge("download.bytes", report_type, size)
    timing("download.duration", report_type, seconds)


def loaded(summary: Mapping[str, Any]) -> None:
    """One set per report type the load wrote: counts, its reports' load time and the volume ratio."""
    seconds: dict[str, float] = {}
    for entry in summary["reports"]:
        took = instant(entry["finished_at"]) - instant(entry["started_at"])
        seconds[entry["report_type"]] = seconds.get(entry["report_type"], 0.0) + took.total_seconds()
    types = {entry["target_table"]: entry["report_type"] for entry in summary["reports"]}
    for table, totals in summary["tables"].items():
        report_type = types[table]
        for count in LOAD_COUNTS:
            gauge(f"load.{count}", report_type, totals[count])
        timing("load.duration", report_type, seconds[report_type])
        ratio = (totals.get("volume") or {}).get("ratio")
        if ratio is not None:
            gauge("volume.ratio", report_type, ratio)
