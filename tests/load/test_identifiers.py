"""Header normalisation: the names every column and key of the warehouse will carry."""

from __future__ import annotations

import pytest
from dexcare.csv_records import MAX_IDENTIFIER_BYTES, normalize_identifier
from dexcare.exceptions import DexCareSchemaError
from dexcare.load.identifiers import normalize_headers, resolve_columns
from dexcare.report import ReportType
from dexcare.sandbox.generator import COLUMNS


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("visitId", "visit_id"),
        ("Visit ID", "visit_id"),
        ("visit_id", "visit_id"),
        ("  Last Updated ", "last_updated"),
        ("bookingCreatedUTC", "booking_created_utc"),
        ("providerNPI", "provider_npi"),
        ("HTTPStatusCode", "http_status_code"),
        ("patientDOB", "patient_dob"),
        ("\ufeffvisitId", "visit_id"),
        ("Ünïcode Straße", "ünïcode_straße"),
        ('x"; DROP TABLE y; --', "x_drop_table_y"),
        ("_dexcare_report_id", "dexcare_report_id"),
        ("1st Visit", "1st_visit"),
    ],
)
def test_normalize_identifier(header: str, expected: str) -> None:
    assert normalize_identifier(header) == expected


def test_generator_headers_normalise_to_a_shared_key() -> None:
    for report_type in ReportType:
        names = normalize_headers(COLUMNS[report_type], source="gen")
        assert names[0] == "visit_id"
        assert len(set(names)) == len(names)


def test_truncates_to_63_bytes_on_a_character_boundary() -> None:
    name = normalize_identifier("é" * 40)  # 80 bytes in UTF-8
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    assert name == "é" * 31  # 62 bytes: the 32nd 'é' would straddle byte 63
    assert len(normalize_identifier("a" * 100)) == MAX_IDENTIFIER_BYTES


def test_collision_names_both_headers() -> None:
    with pytest.raises(DexCareSchemaError) as err:
        normalize_headers(["visitId", "status", "Visit ID"], source="f.csv")
    message = str(err.value)
    assert "'visitId'" in message and "'Visit ID'" in message and "visit_id" in message


def test_collision_after_truncation_is_refused() -> None:
    long = "x" * 70
    with pytest.raises(DexCareSchemaError, match="both normalise"):
        normalize_headers([long + "a", long + "b"], source="f.csv")


@pytest.mark.parametrize("bad", ["", "   ", "***"])
def test_empty_header_is_refused(bad: str) -> None:
    with pytest.raises(DexCareSchemaError, match="column 2"):
        normalize_headers(["visitId", bad], source="f.csv")


def test_resolve_columns_accepts_header_or_normalised_names() -> None:
    available = ["visit_id", "updated_at"]
    assert resolve_columns(["Visit ID", "updated_at"], available, what="key", source="f") == available
    with pytest.raises(DexCareSchemaError) as err:
        resolve_columns(["encounterId"], available, what="key", source="f.csv")
    assert "visit_id, updated_at" in str(err.value) and "'encounterId'" in str(err.value)
