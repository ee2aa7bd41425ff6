"""Load failures as types, so a DAG can tell "fix the file" from "try again later".

Messages name the file, the line and the column, never a value: report rows carry patient data.
"""

from __future__ import annotations

from dexcare.exceptions import DexCareLoadError

__all__ = ["DexCareCSVError", "DexCareCastError", "DexCareLoadError", "DexCareSchemaError", "DexCareWarehouseError"]


class DexCareCSVError(DexCareLoadError):
    """The report file is not a well-formed UTF-8 CSV (ragged row, bad byte, open quote, empty)."""


class DexCareSchemaError(DexCareLoadError):
    """Headers or configuration do not fit: empty or colliding names, missing or empty key, bad type."""


class DexCareCastError(DexCareLoadError):
    """A value does not convert to the column type configured for it."""


class DexCareWarehouseError(DexCareLoadError):
    """The warehouse went away or refused us mid-load; another try can succeed."""

    retryable = True
