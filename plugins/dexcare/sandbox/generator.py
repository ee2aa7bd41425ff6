"""Deterministic, realistic All Visits Report CSVs, so loaders and DAGs can be exercised without DexCare.

The visit universe is a pure function of (seed, report type, calendar day, index): a visit keeps its id
whatever window asks for it, so overlapping reports share visits the way DexCare's do. What changes
between reports is the state of a visit *as of the report's end date* (status, completion, last update),
which is exactly what an upsert/dedupe loader has to get right.

Speed matters (benchmarks ask for millions of rows), so nothing here builds a ``random.Random`` or a
``datetime`` per visit: one SHA-1 per visit yields both its uuid5 id and 20 bytes of stable randomness,
and timestamps are assembled from precomputed string tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import heapq
import os
import uuid
from collections.abc import Iterator
from itertools import islice
from typing import Any

from dexcare.report import ReportType

__all__ = [
    "COLUMNS",
    "ID_COLUMN",
    "STATUS_VALUES",
    "UPDATED_COLUMN",
    "VISIT_NAMESPACE",
    "iter_report_csv",
    "iter_report_rows",
    "report_size",
    "visit_id",
    "visits_per_day_for",
    "write_report_csv",
]

# Three header styles on purpose: DexCare's exports are not consistent across report types, and a loader
# has to normalise them (camelCase, Title Case With Spaces, camelCase with upper-case acronyms).
COLUMNS: dict[ReportType, list[str]] = {
    ReportType.VIRTUAL: [
        "visitId", "createdAt", "scheduledStart", "completedAt", "updatedAt", "visitStatus",
        "patientName", "patientState", "providerName", "practiceName", "reasonForVisit", "modality",
        "waitMinutes",
    ],
    ReportType.RETAIL: [
        "Visit ID", "Created At", "Check In Time", "Completed At", "Last Updated", "Status",
        "Patient Name", "Clinic Name", "Clinic Address", "Reason For Visit", "Payer",
    ],
    ReportType.PROVIDER_BOOKING: [
        "visitId", "bookingCreatedUTC", "appointmentStartUTC", "appointmentEndUTC", "lastModifiedUTC",
        "bookingStatus", "providerNPI", "providerName", "departmentName", "patientDOB", "visitType",
        "bookingChannel", "notes",
    ],
}

# The visit id (normalises to ``visit_id``) and the column a loader can use as a row version.
ID_COLUMN: dict[ReportType, str] = {t: cols[0] for t, cols in COLUMNS.items()}
UPDATED_COLUMN: dict[ReportType, str] = {t: cols[4] for t, cols in COLUMNS.items()}

# Status codes: 0 scheduled, 1 in progress, 2 completed, 3 cancelled, 4 no show; spelled per type.
_SCHEDULED, _IN_PROGRESS, _COMPLETED, _CANCELLED, _NO_SHOW = range(5)
STATUS_VALUES: dict[ReportType, tuple[str, ...]] = {
    ReportType.VIRTUAL: ("scheduled", "in_progress", "completed", "cancelled", "no_show"),
    ReportType.RETAIL: ("Scheduled", "In Progress", "Completed", "Cancelled", "No Show"),
    ReportType.PROVIDER_BOOKING: ("BOOKED", "IN_PROGRESS", "COMPLETED", "CANCELLED", "NO_SHOW"),
}

# Fixed forever: changing it would change every visit id the sandbox ever produced.
VISIT_NAMESPACE = uuid.UUID("6f1c2d3e-9a8b-5c4d-8e7f-0a1b2c3d4e5f")

_FIRST = [
    "José", "Zoë", "François", "Björn", "Ana María", "Łukasz", "Siobhán", "Mateo", "Aaliyah", "Chen",
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sofía", "Mohammed", "Yuki", "Priya",
    "Grace", "Jamal", "Isabella", "Lucas", "Mia", "Ethan", "Amara", "Henrik", "Chloé", "Dmitri",
    "Fatima", "Kai",
]
_LAST = [
    "Núñez", "Ångström", "Lefèvre", "Müller", "O'Connor", "Smith", "Johnson", "García", "Nguyen",
    "Kowalski", "Williams", "Brown", "Jones", "Davis", "Martínez", "Søndergaard", "Takahashi", "Patel",
    "Okafor", "Dubois", "Rossi", "Schröder", "Ivanova", "Kim", "Hernández", "Wilson", "Taylor",
    "Anderson", "Çelik", "Thomas", "Moore", "Jackson",
]
# Whole names that break naive CSV handling: commas, quotes, apostrophes, non-Latin scripts.
_SPECIAL_NAMES = [
    'O\'Brien, "Bud"', "José Núñez", "Li 李", "Björk Guðmundsdóttir", 'Mary-Kate "MK" Olsen',
    "Nguyễn Văn An", "Renée D'Amico, Jr.", "Σωκράτης Παπαδόπουλος",
]
_NAMES: list[str] = [f"{f} {ln}" for f in _FIRST for ln in _LAST]  # 1024
_NAMES[: len(_SPECIAL_NAMES) * 16 : 16] = _SPECIAL_NAMES  # sprinkle them (about 0.8% of patients)

_STATES = ["WA", "OR", "CA", "ID", "TX", "NY", "IL", "CO", "AZ", "FL", "MA", "MN", "UT", "NV", "GA", "OH"]
_PROVIDERS = [
    ("Dr. Amelia Hart, MD", "1457382910"), ("Dr. José Ramírez", "1629384756"),
    ("Dr. Priya Natarajan, DO", "1093847561"), ("Nurse Practitioner Zoë Lind", "1738291045"),
    ("Dr. Kwame Mensah", "1847362910"), ("Dr. Hannah O'Neill", "1928374650"),
    ("Dr. Wei Zhang, PhD, MD", "1564738291"), ("Dr. Søren Kierkegaard", "1374829105"),
    ("PA-C Lucía Fernández", "1283746501"), ('Dr. Robert "Bob" Lee', "1019283746"),
    ("Dr. Ingrid Bergström", "1662738495"), ("Dr. Malik Johnson", "1748392016"),
    ("Dr. Naomi Cohen", "1837465029"), ("Dr. Ahmed Al-Sayed", "1928374615"),
    ("Dr. Emily Chen", "1102938475"), ("Dr. François Dupont", "1293847560"),
]
_PRACTICES = [
    "Evergreen Virtual Care", "Cascade Family Medicine", "Zürich Telehealth Partners",
    "Sunrise Pediatrics, LLC", "Northwest \"Same-Day\" Clinic", "Mountain View Urgent Care",
    "Lakeside Behavioral Health", "Harbor Women's Health",
]
_DEPARTMENTS = [
    "Cardiology", "Dermatology", "Family Medicine", "Orthopedics, Sports Medicine", "Pediatrics",
    "Behavioral Health", "Ob/Gyn", "Neurology",
]
_CLINICS = [
    ("Capitol Hill Express Clinic", "1520 Broadway, Suite 4\nSeattle, WA 98122"),
    ("Bellevue Walk-In", "10400 NE 4th St\nBellevue, WA 98004"),
    ("Zürich Station Clinic", "Bahnhofplatz 15\n8001 Zürich"),
    ("Pearl District MinuteCare", "1200 NW \"Naito\" Pkwy\nPortland, OR 97209"),
    ("Mission Bay QuickCare", "455 Mission Bay Blvd S, Floor 2\nSan Francisco, CA 94158"),
    ("Boise Downtown Clinic", "800 W Main St\nBoise, ID 83702"),
    ("Montréal Centre-Ville", "1000 Rue Sainte-Catherine O\nMontréal, QC H3B 1G1"),
    ("Austin South Congress", "1600 S Congress Ave, Ste 100\nAustin, TX 78704"),
]
_REASONS = [
    "Sore throat", "Cough, fever", "Follow-up", "Rash, itching", "UTI symptoms", "Medication refill",
    "Back pain", "Headache", "Sinus infection", "Allergies", "Anxiety", "Ear pain",
    "Follow-up after surgery\nPatient requests interpreter", 'Pink eye ("conjunctivitis")',
    "Flu-like symptoms; body aches", "Annual physical\nFasting since 8pm",
]
_MODALITIES = ["video", "video", "video", "phone", "chat", "async"]
_PAYERS = [
    "Self-pay", "Aetna", "Blue Cross Blue Shield", "Cigna", "UnitedHealthcare", "Medicare",
    "Medicaid", "Kaiser Permanente", "Humana", "Premera Blue Cross", "Regence, BlueShield", "Tricare",
    "", "Self-pay", "Aetna", "Cigna",
]
_VISIT_TYPES = ["New Patient", "Follow Up", "Annual Wellness", "Procedure", "Telehealth Follow Up",
                "Consult"]
_CHANNELS = ["web", "mobile_app", "call_center", "provider_referral"]
_NOTES = [
    "", "", "", "", "", "", "Prefers afternoon appointments",
    "Needs wheelchair access", 'Patient says: "running 10 min late"',
    "Interpreter: Español\nConfirmed by phone", "Bring imaging CD, prior MRI",
    "Rescheduled twice; confirm insurance", "Parent/guardian will attend",
    "Allergic to penicillin\nUpdate chart", "Referred by Dr. Müller", "VIP — coordinate with front desk",
]

# Lookups keyed by a single random byte; tuples are faster to index than computing weights per row.
_LEAD_DAYS = (0, 0, 0, 0, 1, 1, 2, 3, 5, 7, 0, 0, 1, 2, 14, 0)
_CLOSE_LAG_DAYS = (0, 0, 0, 0, 0, 1, 1, 2)  # days until the final status is recorded
_DURATIONS = (600, 900, 900, 1200, 1200, 1500, 1800, 2700)
_MMDD = [f"-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]  # 336 entries
_DOB_YEARS = [str(y) for y in range(1938, 2024)]
_HHMM = [f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SS = [f"{s:02d}Z" for s in range(60)]


def visit_id(seed: int, report_type: ReportType | str, day: dt.date, index: int) -> str:
    """The id of the index-th visit of a day: uuid5 so any tool can recompute it, independent of windows."""
    rtype = ReportType.parse(report_type)
    return str(uuid.uuid5(VISIT_NAMESPACE, f"{seed}/{rtype.value}/{day.isoformat()}/{index}"))


def visits_per_day_for(rows: int, start: dt.date, end: dt.date) -> int:
    """Visits per day that give at least ``rows`` distinct visits over the window (duplicates come on top)."""
    days = (end - start).days + 1
    if days <= 0:
        raise ValueError(f"start {start} is after end {end}")
    return max(1, -(-max(rows, 0) // days))


def _check_args(start: dt.date, end: dt.date, visits_per_day: int, duplicate_rate: float) -> None:
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if visits_per_day < 0:
        raise ValueError(f"visits_per_day must be >= 0, got {visits_per_day}")
    if not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError(f"duplicate_rate must be within [0, 1], got {duplicate_rate}")


def iter_report_rows(
    report_type: ReportType | str,
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    visits_per_day: int = 100,
    duplicate_rate: float = 0.02,
) -> Iterator[list[str]]:
    """Header, then one row per visit of each day in [start, end] as of ``end``, plus in-file repeats.

    A repeat shows up 1 to 64 rows after the first copy, and the first copy carries the visit's state
    one day earlier, so the later row is always equal or newer: the ordering a dedupe must respect.
    Memory stays bounded by the small heap of pending repeats, whatever the window.
    """
    rtype = ReportType.parse(report_type)
    _check_args(start, end, visits_per_day, duplicate_rate)
    return _iter_rows(_text_flavour(), rtype, start, end, seed, visits_per_day, duplicate_rate)


def _iter_rows(
    flavour: _Flavour,
    rtype: ReportType,
    start: dt.date,
    end: dt.date,
    seed: int,
    visits_per_day: int,
    duplicate_rate: float,
) -> Iterator[list[Any]]:
    """The row stream shared by both flavours, so text rows and CSV bytes can never disagree."""
    yield [flavour.cell(name) for name in COLUMNS[rtype]]
    build = flavour.builders[rtype]
    as_bytes = flavour.binary
    dup_threshold = round(duplicate_rate * 65536)
    end_ord = end.toordinal()
    prefix_ns = VISIT_NAMESPACE.bytes
    pending: list[tuple[int, int, list[Any]]] = []  # (emit at position, tie-break, row)
    heappush, heappop = heapq.heappush, heapq.heappop
    pos = 0
    sha1 = hashlib.sha1
    for day_ord in range(start.toordinal(), end_ord + 1):
        day = dt.date.fromordinal(day_ord)
        base = sha1(prefix_ns + f"{seed}/{rtype.value}/{day.isoformat()}/".encode(), usedforsecurity=False)
        as_of = end_ord - day_ord
        day_s = day_ord * 86400
        for index in range(visits_per_day):
            h = base.copy()
            h.update(str(index).encode())
            b = h.digest()
            x = b.hex()
            # uuid5 by hand (version nibble 5, RFC 4122 variant): uuid.UUID() per row costs more than the row.
            text = f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
            vid: str | bytes = text.encode() if as_bytes else text
            while pending and pending[0][0] <= pos:
                yield heappop(pending)[2]
            if (b[18] << 8 | b[19]) < dup_threshold:
                # A repeat: this (older or equal) copy now, the current one a little later.
                yield build(vid, b, day_s, as_of - 1 if as_of else 0)
                heappush(pending, (pos + 1 + (b[17] & 63), pos, build(vid, b, day_s, as_of)))
            else:
                yield build(vid, b, day_s, as_of)
            pos += 1
    while pending:
        yield heappop(pending)[2]


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _state(b: bytes, day_s: int, as_of: int) -> tuple[int, int, int, int, int, int]:
    """Where a visit stands ``as_of`` days after its scheduled day.

    Returns (status code, created, scheduled start, completed or 0, updated, booked end) in absolute seconds.
    Each transition only ever moves forward in time, so a later as-of never has an older ``updated``.
    """
    start = day_s + 25200 + ((b[3] << 8 | b[4]) % 50400)  # 07:00 to 20:59 UTC
    lead = _LEAD_DAYS[b[0] & 15]
    # Booked days ahead at any hour, or the same day shortly before the visit.
    created = (day_s - lead * 86400 + ((b[1] << 8 | b[2]) % 86400)) if lead else (start - 600 - (b[1] % 180) * 60)
    duration = _DURATIONS[b[5] & 7]
    booked_end = start + duration
    outcome = b[6]
    lag = _CLOSE_LAG_DAYS[b[7] & 7]
    if as_of < lag:  # final status not recorded yet
        if outcome < 192:
            return _IN_PROGRESS, created, start, 0, start + 60 + b[8] * 7, booked_end
        return _SCHEDULED, created, start, 0, created, booked_end
    if lag:
        final = day_s + lag * 86400 + 28800 + b[9] * 113  # recorded a later morning
    elif outcome < 192:
        final = booked_end + b[9] * 3
    else:
        final = start + 900 + b[9] * 5
    amend = (b[7] >> 3) & 7
    updated = final
    if amend >= 5 and as_of >= lag + amend - 4:  # chart amended 1 to 3 days after it was closed
        updated = day_s + (lag + amend - 4) * 86400 + 32400 + b[10] * 97
    if outcome < 192:
        return _COMPLETED, created, start, booked_end + b[9] * 3, updated, booked_end
    if outcome < 225:
        return _CANCELLED, created, start, 0, updated, booked_end
    return _NO_SHOW, created, start, 0, updated, booked_end


class _Flavour:
    """Row builders over tables in one representation: plain text, or CSV-quoted UTF-8 bytes.

    The bytes flavour quotes every fixed string once, up front, with the csv module itself, so a CSV line
    is a mere ``b",".join`` yet byte-identical to ``csv.writer`` output (a test holds us to that). That is
    what takes the CSV path from ~90k to well over 150k rows/s.
    """

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        cell = self.cell
        names = [cell(n) for n in _NAMES]
        states = [cell(s) for s in _STATES]
        providers = [(cell(n), cell(npi)) for n, npi in _PROVIDERS]
        practices = [cell(p) for p in _PRACTICES]
        departments = [cell(d) for d in _DEPARTMENTS]
        clinics = [(cell(n), cell(a)) for n, a in _CLINICS]
        reasons = [cell(r) for r in _REASONS]
        modalities = [cell(m) for m in _MODALITIES]
        payers = [cell(p) for p in _PAYERS]
        visit_types = [cell(v) for v in _VISIT_TYPES]
        channels = [cell(c) for c in _CHANNELS]
        notes = [cell(n) for n in _NOTES]
        waits = [cell(str(w)) for w in range(45)]
        dob_years = [cell(y) for y in _DOB_YEARS]
        mmdd = [cell(m) for m in _MMDD]
        hhmm = [cell(t) for t in _HHMM]
        ss = [cell(t) for t in _SS]
        empty = cell("")
        day_text: dict[int, Any] = {}
        statuses = {t: [cell(s) for s in values] for t, values in STATUS_VALUES.items()}
        started = (_IN_PROGRESS, _COMPLETED)

        def ts(seconds: int) -> Any:
            day, rem = divmod(seconds, 86400)
            minute, sec = divmod(rem, 60)
            text = day_text.get(day)
            if text is None:
                if len(day_text) > 50_000:  # bounded: windows are never that long
                    day_text.clear()
                text = day_text[day] = cell(dt.date.fromordinal(day).isoformat())
            return text + hhmm[minute] + ss[sec]

        def virtual(vid: Any, b: bytes, day_s: int, as_of: int, st: list[Any] = statuses[ReportType.VIRTUAL]
                    ) -> list[Any]:
            status, created, start, completed, updated, _ = _state(b, day_s, as_of)
            return [
                vid, ts(created), ts(start), ts(completed) if completed else empty, ts(updated), st[status],
                names[(b[13] << 8 | b[14]) & 1023], states[b[15] & 15], providers[b[12] & 15][0],
                practices[b[15] >> 5], reasons[b[16] & 15], modalities[b[16] % 6],
                waits[b[11] % 45] if status in started else empty,
            ]

        def retail(vid: Any, b: bytes, day_s: int, as_of: int, st: list[Any] = statuses[ReportType.RETAIL]
                   ) -> list[Any]:
            status, created, start, completed, updated, _ = _state(b, day_s, as_of)
            clinic = clinics[b[12] & 7]
            return [
                vid, ts(created), ts(start - 300 + b[11]) if status in started else empty,
                ts(completed) if completed else empty, ts(updated), st[status],
                names[(b[13] << 8 | b[14]) & 1023], clinic[0], clinic[1], reasons[b[16] & 15],
                payers[b[15] & 15],
            ]

        def booking(vid: Any, b: bytes, day_s: int, as_of: int,
                    st: list[Any] = statuses[ReportType.PROVIDER_BOOKING]) -> list[Any]:
            status, created, start, _, updated, booked_end = _state(b, day_s, as_of)
            provider = providers[b[12] & 15]
            return [
                vid, ts(created), ts(start), ts(booked_end), ts(updated), st[status], provider[1],
                provider[0], departments[b[15] & 7], dob_years[b[13] % 86] + mmdd[(b[14] << 1 | b[16]) % 336],
                visit_types[b[15] % 6], channels[b[11] & 3], notes[b[16] & 15],
            ]

        self.builders = {
            ReportType.VIRTUAL: virtual,
            ReportType.RETAIL: retail,
            ReportType.PROVIDER_BOOKING: booking,
        }

    def cell(self, text: str) -> Any:
        if not self.binary:
            return text
        return _csv_quote(text).encode()


def _csv_quote(text: str) -> str:
    """One field exactly as csv.writer(QUOTE_MINIMAL) would write it inside a multi-field row."""
    sink = _Sink()
    csv.writer(sink, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerow([text, ""])
    return "".join(sink.parts)[:-3]  # drop the trailing ',' + empty field + '\r\n'


_FLAVOURS: dict[bool, _Flavour] = {}


def _text_flavour() -> _Flavour:
    if False not in _FLAVOURS:
        _FLAVOURS[False] = _Flavour(binary=False)
    return _FLAVOURS[False]


def _bytes_flavour() -> _Flavour:
    if True not in _FLAVOURS:
        _FLAVOURS[True] = _Flavour(binary=True)
    return _FLAVOURS[True]


class _Sink:
    """Collects csv.writer output; a list append is cheaper than StringIO for short lines."""

    __slots__ = ("parts", "write")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.write = self.parts.append


def iter_report_csv(
    report_type: ReportType | str,
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    visits_per_day: int = 100,
    duplicate_rate: float = 0.02,
    chunk_size: int = 65536,
) -> Iterator[bytes]:
    """The report as UTF-8 CSV chunks of ``chunk_size`` bytes (the last one shorter), in constant memory.

    Bytes leave as soon as a chunk is full, so a 10 GB report costs no more memory than a 10 kB one.
    """
    rtype = ReportType.parse(report_type)
    _check_args(start, end, visits_per_day, duplicate_rate)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    return _iter_csv(rtype, start, end, seed, visits_per_day, duplicate_rate, chunk_size)


def _blocks(rtype: ReportType, start: dt.date, end: dt.date, seed: int, visits_per_day: int,
            duplicate_rate: float, batch: int) -> Iterator[tuple[bytes, int]]:
    """CRLF-terminated lines, ``batch`` rows at a time, each block with its row count (header included)."""
    rows = _iter_rows(_bytes_flavour(), rtype, start, end, seed, visits_per_day, duplicate_rate)
    join = b",".join
    while True:
        lines = [join(row) for row in islice(rows, batch)]
        if not lines:
            return
        count = len(lines)
        lines.append(b"")
        yield b"\r\n".join(lines), count


def _iter_csv(rtype: ReportType, start: dt.date, end: dt.date, seed: int, visits_per_day: int,
              duplicate_rate: float, chunk_size: int) -> Iterator[bytes]:
    buffer = bytearray()
    batch = max(16, min(1024, chunk_size // 128))
    for block, _ in _blocks(rtype, start, end, seed, visits_per_day, duplicate_rate, batch):
        buffer += block
        if len(buffer) >= chunk_size:
            cut = len(buffer) - len(buffer) % chunk_size
            for offset in range(0, cut, chunk_size):
                yield bytes(buffer[offset : offset + chunk_size])
            del buffer[:cut]
    if buffer:
        yield bytes(buffer)


def write_report_csv(
    path: str | os.PathLike[str],
    report_type: ReportType | str,
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    visits_per_day: int = 100,
    duplicate_rate: float = 0.02,
) -> int:
    """Write the report to ``path`` and return the number of data rows (repeats included)."""
    rtype = ReportType.parse(report_type)
    _check_args(start, end, visits_per_day, duplicate_rate)
    count = -1  # the header is not a data row
    with open(path, "wb") as fh:
        for block, rows in _blocks(rtype, start, end, seed, visits_per_day, duplicate_rate, 1024):
            fh.write(block)
            count += rows
    return count


def report_size(
    report_type: ReportType | str,
    start: dt.date,
    end: dt.date,
    *,
    seed: int = 0,
    visits_per_day: int = 100,
    duplicate_rate: float = 0.02,
) -> int:
    """Exact byte length of the CSV by a counting pass: what Content-Length needs without any buffer."""
    return sum(map(len, iter_report_csv(report_type, start, end, seed=seed, visits_per_day=visits_per_day,
                                        duplicate_rate=duplicate_rate, chunk_size=1 << 20)))
