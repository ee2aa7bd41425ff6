"""The one record a download hands to the load and the clean-up, and its XCom form.

The download and the load usually run as different tasks, often on different workers, so what passes between
them goes through XCom as plain JSON. Both sides read and write it here, so the shape is written once: the
download builds a :class:`ReportHandoff` from the :class:`~dexcare.storage.ReportLocation` it wrote and pushes
:meth:`ReportHandoff.to_xcom`; the load and the clean-up read it back with :meth:`ReportHandoff.from_xcom`,
which parses the location once, so a bad value is refused before the warehouse is touched and the file is then
opened and deleted through that one parse.

The XCom form carries a ``version``. A run's XCom outlives an upgrade (a load cleared days later, a run that
spans a deployment), so a later release that changes the form must still read what this one wrote; and this
release refuses a form it does not know instead of guessing. A form without ``version`` is version 1: it is
what releases before the field existed pushed, with the same keys.

Only names, sizes, counts and checksums travel: never a field of the report (its header names are column
names, not data: the download refuses a first line that is not a DexCare header).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dexcare.exceptions import DexCareLoadError
from dexcare.report import DEFAULT_LOOKBACK_DAYS, ReportRequest, ReportType, parse_iso_date, validate_report_id
from dexcare.storage import ReportLocation

#: The XCom form this release writes, and the newest it reads.
XCOM_VERSION = 1
#: Where a parsed location came from, for the storage's messages.
XCOM_SOURCE = "the download result's uri"


@dataclass(frozen=True)
class ReportHandoff:
    """One downloaded report: where its CSV is, what it holds, and which report it is.

    ``uri`` is the location as the download recorded it (what the audit row and every message name) and
    ``location`` the same, parsed. ``rows`` counts data records (quoted newlines included); ``header`` is the
    CSV's header fields (``None`` if the file has no readable header). ``report_type`` is ``None`` only for a
    file the hook downloaded without being told the request: such a record cannot be loaded. A missing window
    (``start_date``/``end_date``) is DexCare's default, the past :data:`~dexcare.report.DEFAULT_LOOKBACK_DAYS`
    days (:meth:`window`).
    """

    location: ReportLocation
    uri: str
    report_id: str
    report_type: ReportType | None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    bytes: int | None = None
    sha256: str | None = None
    rows: int | None = None
    header: list[str] | None = None
    #: The DexCare base URL the report came from (OpenLineage names the report by it: :mod:`dexcare.lineage`).
    endpoint: str | None = None

    @classmethod
    def downloaded(
        cls,
        location: ReportLocation,
        report_id: str,
        *,
        bytes: int,
        sha256: str,
        rows: int,
        header: list[str] | None,
        request: ReportRequest | None = None,
        endpoint: str | None = None,
    ) -> ReportHandoff:
        """What a download that wrote ``location`` hands over."""
        return cls(
            location=location,
            uri=location.uri,
            report_id=report_id,
            report_type=request.report_type if request is not None else None,
            start_date=request.start_date if request is not None else None,
            end_date=request.end_date if request is not None else None,
            bytes=bytes,
            sha256=sha256,
            rows=rows,
            header=header,
            endpoint=endpoint,
        )

    @property
    def path(self) -> str:
        """The plain path of a local file (what a shell user types), the URI otherwise."""
        return self.location.display

    def loadable_type(self) -> ReportType:
        """The report type, which the load needs to choose the table; refused when the download was not told it."""
        if self.report_type is None:
            raise DexCareLoadError(
                f"Report {self.report_id} ({self.uri}) was handed over without its report type, so it cannot be "
                "loaded. Fix: download it with DexCareDownloadReportOperator, or pass request= to "
                "DexCareHook.download_report."
            )
        return self.report_type

    def window(self, run_date: dt.date) -> tuple[dt.date, dt.date]:
        """First and last day the report covers; a missing end is the run's date, a missing start DexCare's
        default lookback before the end."""
        end = self.end_date or run_date
        return self.start_date or end - dt.timedelta(days=DEFAULT_LOOKBACK_DAYS), end

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON values: the download's return value, and so its XCom."""
        return {
            "version": XCOM_VERSION,
            "report_id": self.report_id,
            "report_type": self.report_type.value if self.report_type is not None else None,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "endpoint": self.endpoint,
            "uri": self.uri,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "rows": self.rows,
            "header": self.header,
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> ReportHandoff:
        """Read a download's XCom: this release's form, or one written before the ``version`` field existed.

        ``uri``, ``report_type`` and ``report_id`` are required; everything else may be missing (a result
        built by hand, or by an older release).
        """
        if not isinstance(value, Mapping):
            raise DexCareLoadError(
                f"A download result must be a mapping (the XCom of DexCareDownloadReportOperator); got a "
                f"{type(value).__name__}."
            )
        version = value.get("version", XCOM_VERSION)
        if type(version) is not int or version != XCOM_VERSION:
            raise DexCareLoadError(
                f"Download result of report {value.get('report_id')!r} has version {version!r}; this release of "
                f"the DexCare provider reads version {XCOM_VERSION} (or a result without a version). It was "
                "written by another release of the provider. Fix: run the same provider release on every worker "
                "(upgrade the one that runs the load), or clear the download task so it writes the result again."
            )
        try:
            uri = str(value["uri"])
            report_type = ReportType.parse(value["report_type"])
            report_id = validate_report_id(value["report_id"])
        except KeyError as exc:
            raise DexCareLoadError(
                f"Download result is missing {exc.args[0]!r}; expected uri, report_type and report_id "
                f"(got keys: {', '.join(sorted(map(str, value)))})."
            ) from None
        rows, size, header = value.get("rows"), value.get("bytes"), value.get("header")
        return cls(
            location=ReportLocation.parse(uri, XCOM_SOURCE),
            uri=uri,
            report_id=report_id,
            report_type=report_type,
            start_date=parse_iso_date(value.get("start_date"), "start_date"),
            end_date=parse_iso_date(value.get("end_date"), "end_date"),
            bytes=int(size) if size is not None else None,
            sha256=value.get("sha256") or None,
            rows=int(rows) if rows is not None else None,
            header=[str(name) for name in header] if header is not None else None,
            endpoint=value.get("endpoint") or None,
        )
