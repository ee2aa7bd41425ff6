"""The interface every warehouse dialect implements: one run's conversation with one warehouse.

:class:`Dialect` is everything that differs between PostgreSQL and SQL Server: quoting, types, locking,
staging, the dedupe and upsert SQL, how to connect, and how the driver's errors read. What is the same for both
(the header, names, keys, drift planning, the guard's rule, the audit record, the summary) lives in
:mod:`dexcare.load.plan`, :mod:`dexcare.load.audit` and :mod:`dexcare.load.loader`, which drive a dialect
through one transaction per run. Which dialect a connection gets is :mod:`dexcare.load.dialects`' table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, ClassVar, NamedTuple

from dexcare.exceptions import DexCareLoadError
from dexcare.load.csv_stream import Header, Opener
from dexcare.load.options import LoadOptions
from dexcare.load.plan import LoadPlan, TypeNames


class MergeCounts(NamedTuple):
    """What :meth:`Dialect.merge` did to one table."""

    duplicates: int
    inserted: int
    updated: int
    #: Rows appended to the history table (its baseline included); 0 when no history is kept.
    history: int = 0
    #: Rows of the file the old-window guard kept as they were: a newer window had written their key.
    kept_newer: int = 0


class Dialect(ABC):
    """One run's conversation with one warehouse; every method runs inside :meth:`transaction`."""

    types: ClassVar[TypeNames]

    def __init__(self, conn: Any, options: LoadOptions, opener: Opener) -> None:
        self.conn = conn
        self.options = options
        self.opener = opener
        self.cursor = conn.cursor()

    @staticmethod
    @abstractmethod
    def hook(conn_id: str, connection: Any) -> Any:
        """The official provider's hook for the Airflow connection (already looked up: in a task each lookup
        is a round trip to the API server, and maybe to a secrets backend)."""

    @staticmethod
    @abstractmethod
    def connect(hook: Any) -> Any:
        """This dialect's driver connection through ``hook``, not autocommit, as the hooks hand them out; the
        caller closes it."""

    @staticmethod
    @abstractmethod
    def quote(*parts: str) -> str:
        """``schema.table`` (or one name) quoted for this warehouse, for SQL written outside the loader."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Commit when the block ends normally; roll back on any exception. Refuses a busy connection."""

    @abstractmethod
    def begin(self) -> None:
        """Session settings, the run's lock on the schema, the schema itself and the audit table."""

    @abstractmethod
    def resolve_type(self, name: str, *, where: str) -> str:
        """The canonical spelling of a configured column type; refuses one the warehouse does not know."""

    @abstractmethod
    def existing_columns(self, table: str) -> dict[str, str] | None:
        """Column name -> type of the table in the run's schema, in table order; ``None`` if it does not exist."""

    @abstractmethod
    def stage(self, plan: LoadPlan, header: Header, stream: BinaryIO, index: int) -> int:
        """Make the table fit the plan and stream the file's records somewhere the merge can read them.

        Returns the number of data records in the file.
        """

    @abstractmethod
    def merge(self, plan: LoadPlan, rows_in_file: int, index: int) -> MergeCounts:
        """Dedupe the staged file and upsert it; with :attr:`LoadPlan.history`, append every row the upsert
        wrote to the history table, from the same statements (never by comparing tables afterwards)."""

    @abstractmethod
    def record_audit(self, entry: dict[str, Any]) -> None:
        """Insert the report's ``load_audit`` row."""

    @abstractmethod
    def volume_baseline(self, report_type: str, days: int, limit: int) -> list[int]:
        """``rows_in_file`` of the latest ``limit`` loads of this report type whose window is ``days`` long,
        newest first: one query on ``load_audit``'s volume index, inside the load's transaction."""

    @staticmethod
    @abstractmethod
    def audit_rows(conn: Any, schema: str, report_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The ``load_audit`` rows of these reports (every field of :data:`AUDIT_FIELDS`), oldest first; none
        when the table does not exist yet. Read in a short transaction of its own, outside any load, so a
        retry can tell that an earlier try's load committed."""

    @abstractmethod
    def translate(self, exc: BaseException, *, current: str, committing: bool) -> DexCareLoadError | None:
        """The driver error as ours, without any row value; ``None`` if it is not a driver error."""
