"""How an undeclared version column is ordered: as the instant each value names, not as text.

As text, ``2026-11-18T10:00:00Z`` sorts after ``2026-11-18T10:00:00.500Z`` and ``...T15:00:00+01:00`` after
``...T14:30:00Z``, so "newest wins" would keep the older row. A version column without a configured type is
therefore read as an ISO 8601 timestamp with a UTC offset, for ordering only (the stored value stays the
file's text). This module says what is accepted on both warehouses: the SQL Server path checks every value
against :data:`PATTERN` in Python while it parses the file, then converts to ``datetimeoffset``; PostgreSQL
checks the same forms in SQL (:data:`FORMS`) and casts to ``timestamptz`` (tests/load/test_instants.py
holds the two to the same answers). Only forms both servers read the same way, whatever the session's time
zone or language, are accepted; anything else fails the load naming line and column, so a column that is not
a timestamp gets its type declared instead of being ordered by a guess.
"""

from __future__ import annotations

import datetime as dt
import re

#: ``YYYY-MM-DD``, ``T`` or a space, ``hh:mm:ss``, up to 7 fractional digits (.NET's round-trip form has 7;
#: PostgreSQL compares to the microsecond), then ``Z`` or an offset ``±hh:mm`` or ``±hhmm`` of at most 14 hours
#: (SQL Server's limit).
PATTERN = (
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,7})?(?:Z|[+-](?:(?:0[0-9]|1[0-3]):?[0-5][0-9]|14:?00))"
)
_INSTANT = re.compile(PATTERN)

#: The forms :data:`PATTERN` accepts, each digit written ``0``, the commonest first. PostgreSQL checks a
#: value's form by writing its digits as ``0`` (``translate``) and looking it up here, the ranges the cast does
#: not check itself (hour 24, second 60, offsets beyond 14:00) in SQL, and the rest with the cast: about half
#: the cost of a regular expression there (~3 us a row, a second per 300,000 rows).
FORMS = tuple(
    f"0000-00-00{separator}00:00:00{fraction}{offset}"
    for offset in ("Z", "+00:00", "-00:00", "+0000", "-0000")
    for separator in ("T", " ")
    for fraction in ("", ".000", ".000000", ".0000000", ".0", ".00", ".0000", ".00000")
)
#: What a message shows as an accepted value.
EXAMPLE = "2026-11-18T10:00:00Z"


def is_instant(value: str) -> bool:
    """Whether ``value`` names an instant in an accepted form (and a real date: no 30 February)."""
    if _INSTANT.fullmatch(value) is None:
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
