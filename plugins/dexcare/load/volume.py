"""The volume guard: a report's rows against its report type's recent loads, decided before the commit.

A report that comes back empty or shrunk (a DexCare outage, a changed filter, a clinic's feed that stopped)
loads without an error, and the table silently stops growing. ``load_audit`` already holds the rows of every
committed load, so it is the baseline: the last :data:`BASELINE_LOADS` loads of the same report type whose
window has the same length (a 10-day window and a 90-day backfill are not comparable). Zero rows against a
non-zero baseline fails the load (nothing written); fewer than ``min_share`` of the baseline's median warns.
With fewer than :data:`MIN_BASELINE_LOADS` such loads there is no verdict.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dexcare.exceptions import DexCareSchemaError, DexCareVolumeError
from dexcare.report import ReportType

#: How many of the latest loads of a report type and window length make its baseline.
BASELINE_LOADS = 14
#: Below this many, there is no verdict (the first days of a deployment or of a new window length).
MIN_BASELINE_LOADS = 5
#: A report below this share of the baseline median warns.
DEFAULT_MIN_SHARE = 0.5

OK, WARN, NO_BASELINE, ACCEPTED, EMPTY = "ok", "warn", "no_baseline", "accepted", "empty"
#: Worst first: a table loaded from several reports carries the worst of their verdicts.
SEVERITY = (EMPTY, WARN, ACCEPTED, NO_BASELINE, OK)


@dataclass(frozen=True)
class Volume:
    """One report's verdict; :meth:`as_dict` is what the summary, the asset extra and the page read."""

    verdict: str
    rows: int
    baseline_median: float | None
    baseline_loads: int
    ratio: float | None
    min_share: float

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "rows": self.rows, "baseline_median": self.baseline_median,
                "baseline_loads": self.baseline_loads, "ratio": self.ratio, "min_share": self.min_share}


def judge(rows: int, baseline: Sequence[int], *, min_share: float, accepted: bool) -> Volume:
    """The verdict on ``rows`` given the baseline loads' row counts (newest first)."""
    loads = len(baseline)
    if loads < MIN_BASELINE_LOADS:
        return Volume(NO_BASELINE, rows, None, loads, None, min_share)
    median = float(statistics.median(baseline))
    ratio = rows / median if median else None
    if median and rows == 0:
        verdict = EMPTY
    elif ratio is not None and ratio < min_share:
        verdict = WARN
    else:
        verdict = OK
    if accepted and verdict in (EMPTY, WARN):
        verdict = ACCEPTED
    return Volume(verdict, rows, median, loads, ratio, min_share)


def worst(volumes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A table's volume: the worst verdict among its reports' (each report is judged on its own)."""
    return dict(min(volumes, key=lambda v: SEVERITY.index(v["verdict"])))


def empty_error(volume: Volume, *, table: str, report_type: str, report_id: str, days: int) -> DexCareVolumeError:
    return DexCareVolumeError(
        f"Volume guard: report {report_id} ({report_type}) has 0 rows, but the last {volume.baseline_loads} "
        f"{report_type} load(s) of {days}-day windows in load_audit had a median of {volume.baseline_median:g} "
        f"rows. Nothing was written to {table}. If DexCare really has no visits for this window, accept it for "
        f"this run: trigger the DAG again with accept_volume [\"{report_type}\"] (or true), or set accept_volume "
        "on the load task, and clear it; otherwise check DexCare (an outage, a changed report filter, a clinic's "
        "feed that stopped) before loading again.",
        counts={"table": table, "report_type": report_type, "rows": volume.rows,
                "baseline_median": volume.baseline_median, "baseline_loads": volume.baseline_loads},
    )


def warning_line(volume: Volume, *, table: str, report_type: str, report_id: str, days: int) -> str:
    return (
        f"Volume guard: report {report_id} ({report_type}) has {volume.rows} rows, {volume.ratio:.2f} of the "
        f"median {volume.baseline_median:g} of the last {volume.baseline_loads} {report_type} load(s) of "
        f"{days}-day windows (warns below {volume.min_share:g}); loaded into {table}. Check DexCare for a "
        "partial outage or a changed filter; tune the share with volume_min_share ([dexcare] config or the "
        "DAG param)."
    )


def no_baseline_line(report_type: str, days: int, loads: int) -> str:
    return (
        f"Volume guard: no verdict for {report_type} reports of {days}-day windows yet: {loads} earlier load(s) "
        f"in load_audit, {MIN_BASELINE_LOADS} make a baseline."
    )


def min_shares(value: float | str | Mapping[str, Any] | None, *, where: str) -> dict[str, float]:
    """``0.3`` (every report type) or ``{"virtual": 0.3, "default": 0.5}``; a share outside 0..1 or a name that
    is not a report type is refused, naming it. The key ``"*"`` holds the share for every type."""
    if value is None or value == "" or value == {}:
        return {}
    if not isinstance(value, Mapping):
        return {"*": _share(value, where)}
    out = {}
    for key, share in value.items():
        name = str(key)
        if name not in ("*", "default"):
            try:
                name = ReportType.parse(name).value
            except ValueError:
                raise DexCareSchemaError(f"{where}: {key!r} is not a report type.") from None
        out["*" if name == "default" else name] = _share(share, f"{where}[{key!r}]")
    return out


def configured_min_shares() -> dict[str, float]:
    """``[dexcare] volume_min_share`` (``AIRFLOW__DEXCARE__VOLUME_MIN_SHARE``): a number or a JSON object."""
    from airflow.providers.common.compat.sdk import conf

    text = (conf.get("dexcare", "volume_min_share", fallback="") or "").strip()
    where = "[dexcare] volume_min_share"
    if text.startswith("{"):
        try:
            value: Any = json.loads(text)
        except ValueError:
            raise DexCareSchemaError(f"{where}: not a JSON object; write e.g. {{\"virtual\": 0.3, \"*\": 0.5}}."
                                     ) from None
        return min_shares(value, where=where)
    return min_shares(text, where=where)


def _share(value: Any, where: str) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise DexCareSchemaError(f"{where}: {value!r} is not a share between 0 and 1 (e.g. 0.5 warns below half "
                                 "of the usual rows; 0 never warns).")
    return share


def accepted_types(value: bool | str | Sequence[str] | None, *, where: str = "accept_volume") -> frozenset[str]:
    """``True`` (every type), ``False``/``None``, or report type names; refuses a name that is not one."""
    if value is None or value is False:
        return frozenset()
    if value is True:
        return frozenset(t.value for t in ReportType)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "false", "0", "no", "off", "none", "[]"):
            return frozenset()
        if text in ("true", "1", "yes", "on", "all"):
            return frozenset(t.value for t in ReportType)
        value = [part.strip() for part in text.split(",")]
    found = set()
    for name in value:
        try:
            found.add(ReportType.parse(name).value)
        except ValueError:
            allowed = ", ".join(t.value for t in ReportType)
            raise DexCareSchemaError(f"{where}: {name!r} is not a report type; give true or a list of {allowed}."
                                     ) from None
    return frozenset(found)
