"""One exception hierarchy for everything DexCare can answer, so callers branch on types, not strings.

Messages say what went wrong and what to do about it. None of them ever carries the reporting service
key or a response body that could hold patient data: only DexCare's short error message. A message is redacted
(``dexcare.redaction``) when the error is made, because many are built from a library's exception text, and
aiohttp's quotes the proxy URL with its user and password: no call site has to remember it.

Two kinds of "not retried": ``retryable`` is False for every error the hook's and the trigger's own retries
must not repeat, and a :class:`DexCareFinalError` is not retried by Airflow's task retries either (it is an
``AirflowFailException``): a wrong key, a bad request or an unreadable answer fails the same way on every try,
and retrying it with backoff only pages the on-call engineer later.
"""

from __future__ import annotations

from dexcare.compat import AirflowException, AirflowFailException
from dexcare.redaction import redact


class DexCareError(AirflowException):
    """Base class; ``retryable`` tells the retry loop and the trigger whether another try can help."""

    retryable: bool = False

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)


class DexCareFinalError(DexCareError, AirflowFailException):
    """No try can fix it, so the task fails without Airflow's task retries as well."""


class DexCareValidationError(DexCareFinalError, ValueError):
    """Bad input caught before any request is sent."""


class DexCareAPIError(DexCareError):
    """DexCare answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        # DexCare's own status (any int, 599 included); AirflowException declares the name as the HTTPStatus its
        # API would answer with, so it is set on the instance rather than re-typed.
        self.__dict__["status_code"] = status_code
        self.server_message = server_message
        self.retry_after = retry_after


class DexCareBadRequestError(DexCareAPIError, DexCareFinalError):
    """400: the request itself is wrong (or the report has not succeeded yet, for downloads)."""


class DexCareAuthError(DexCareAPIError, DexCareFinalError):
    """403: the reporting service key was refused."""


class DexCareNotFoundError(DexCareAPIError, DexCareFinalError):
    """404: DexCare does not know the report (wrong id, or it expired)."""


class DexCareRateLimitError(DexCareAPIError):
    """429: DexCare asks us to slow down; ``retry_after`` holds its hint in seconds."""

    retryable = True


class DexCareServerError(DexCareAPIError):
    """5xx: DexCare failed; usually transient."""

    retryable = True


class DexCareResponseError(DexCareFinalError):
    """DexCare answered 2xx with something we cannot read (not JSON, missing field, unknown status), or an
    answer no retry changes (a proxy's 407, an unexpected status)."""


class DexCareUnknownStatusError(DexCareResponseError):
    """A report status outside QUEUED/RUNNING/SUCCEEDED/FAILED/CANCELLED: never guessed at."""


class DexCareReportFailedError(DexCareError):
    """The report (and every resubmission allowed) ended FAILED or CANCELLED."""


class DexCareDownloadReportError(DexCareError):
    """The report cannot be downloaded yet (not SUCCEEDED) or its request is unknown."""


class DexCareConnectionError(DexCareError):
    """The endpoint could not be reached (DNS, refused, reset, TLS)."""

    retryable = True


class DexCareTimeoutError(DexCareConnectionError):
    """DexCare did not answer within the request timeout."""


class DexCareIncompleteDownloadError(DexCareConnectionError):
    """The CSV body ended before its announced length: the connection broke off mid-download."""


# --- Loading into the warehouse ---------------------------------------------------------------------------
# Messages name the file, the line and the column, never a value: report rows carry patient data.


class DexCareLoadError(DexCareError):
    """The load into the warehouse failed; the transaction was rolled back, so nothing was written.

    Also the base of :class:`DexCareReportFileMissingError`: a missing report file is both a storage and a
    load error.
    """


class DexCareCSVError(DexCareLoadError):
    """The report file is not a well-formed UTF-8 CSV (ragged row, bad byte, open quote, empty)."""


class DexCareSchemaError(DexCareLoadError):
    """Headers or configuration do not fit: empty or colliding names, missing, empty or too long key, bad type."""


class DexCareCastError(DexCareLoadError):
    """A value does not convert to the column type configured for it."""


class DexCareWarehouseError(DexCareLoadError):
    """The warehouse went away or refused us mid-load; another try can succeed."""

    retryable = True


# --- report storage (dexcare.storage) ----------------------------------------------------------------------


class DexCareStorageError(DexCareError):
    """Report storage that cannot work: a bad location, or a worker-local directory on a multi-machine executor."""


class DexCareReportFileMissingError(DexCareStorageError, DexCareLoadError):
    """A downloaded report file is not where its URI says: deleted, expired, or on another worker's disk."""


class DexCareCleanUpError(DexCareStorageError):
    """The load committed but some of the run's files could not be deleted; a retry finishes only the clean-up."""

    retryable = True


# --- on-call guards ----------------------------------------------------------------------------------------


class DexCareVolumeError(DexCareLoadError, DexCareFinalError):
    """A report came back empty where its report type's recent loads were not: the load wrote nothing.

    Final: DexCare answers the same report the same way on every try; an empty day that is real is let through
    with ``accept_volume``. ``counts`` holds names and numbers only (``table``, ``report_type``, ``rows``,
    ``baseline_median``, ``baseline_loads``), for the page.
    """

    def __init__(self, message: object = "", *, counts: dict[str, object]) -> None:
        super().__init__(message)
        self.counts = counts
