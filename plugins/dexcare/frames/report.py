"""A DexCare report file, or a report straight from DexCare, as pandas DataFrames of bounded size.

The file is read by the load's own CSV code (:func:`dexcare.load.csv_stream.read_header` and
:func:`dexcare.load.records.records`: BOM, strict UTF-8, ragged rows, open quotes, line endings, each error
naming the line and never a value) and its header normalised by :func:`dexcare.load.identifiers.normalize_headers`,
so a file the load refuses is refused here with the same message, and the frame's columns are the table's.
Records stream through in blocks and at most one chunk of rows is held as Python lists, so a report larger than
memory can be read chunk by chunk (:func:`iter_report_frames`).

From DexCare, the report is first downloaded (:meth:`DexCareHook.download_report`: retries, the Content-Length
check, all-or-nothing) into a private temporary directory (0700, the file 0600), because a body that breaks off
must never become half a DataFrame, and because the error path reads the file again to name the line. The
directory is removed when the read ends, whichever way it ends: returned, raised, or the chunk generator closed
or collected.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dexcare.csv_records import DEFAULT_KEY
from dexcare.exceptions import DexCareValidationError
from dexcare.frames import require_pandas
from dexcare.frames.columns import SAMPLE_ROWS, FrameColumns
from dexcare.load.csv_stream import read_header
from dexcare.load.identifiers import normalize_headers, resolve_columns
from dexcare.load.records import records
from dexcare.report import ReportRequest, validate_report_id
from dexcare.storage import ReportLocation
from dexcare.wait.blocking import (
    DEFAULT_FAILED_GRACE_PERIOD,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    BlockingWait,
)

if TYPE_CHECKING:
    import pandas as pd

    from dexcare.hooks.dexcare import DexCareHook

log = logging.getLogger(__name__)

#: Rows per piece when the whole frame is built: the rows are held as Python lists (several times the size
#: of the finished columns) only one piece at a time.
WHOLE_FRAME_PIECE = 50_000


def read_report(
    location: str | os.PathLike[str] | ReportLocation,
    *,
    key_columns: Sequence[str] = DEFAULT_KEY,
    timestamp_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A downloaded report file (path, ``file://`` or object-store URI, as ``download_report`` returns it) as
    one DataFrame. Column typing: :mod:`dexcare.frames.columns`."""
    pd = require_pandas("read_report")
    chunks = iter_report_frames(location, chunksize=WHOLE_FRAME_PIECE, key_columns=key_columns,
                                timestamp_columns=timestamp_columns)
    return _whole(pd, chunks)


def iter_report_frames(
    location: str | os.PathLike[str] | ReportLocation,
    *,
    chunksize: int,
    key_columns: Sequence[str] = DEFAULT_KEY,
    timestamp_columns: Sequence[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of at most ``chunksize`` rows; they concatenate to :func:`read_report`'s frame."""
    pandas = require_pandas("iter_report_frames")
    chunksize = _check_chunksize(chunksize)
    report = ReportLocation.parse(location)
    source = report.uri

    def chunks() -> Iterator[pd.DataFrame]:
        with report.open() as stream:
            yield from _frames(pandas, stream, source, lambda _source: report.open(), chunksize,
                               list(key_columns), timestamp_columns)

    return chunks()


# --- from DexCare (DexCareHook.get_df / get_df_by_chunks) --------------------------------------------------------


def report_chunks(
    hook: DexCareHook,
    report_id: str | None,
    *,
    chunksize: int,
    report_type: str | None = None,
    start_date: str | dt.date | None = None,
    end_date: str | dt.date | None = None,
    key_columns: Sequence[str] = DEFAULT_KEY,
    timestamp_columns: Sequence[str] | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    failed_grace_period: float = DEFAULT_FAILED_GRACE_PERIOD,
    max_resubmits: int = 0,
    temp_dir: str | os.PathLike[str] | None = None,
) -> Iterator[pd.DataFrame]:
    """Everything is checked now, before any request, the wait's settings first (by the sensor's rules,
    :class:`dexcare.wait.blocking.BlockingWait`); the report is requested (or downloaded) on the first ``next()``,
    so an iterator never consumed costs nothing."""
    wait = BlockingWait.build(poll_interval=poll_interval, timeout=timeout,
                              failed_grace_period=failed_grace_period, max_resubmits=max_resubmits)
    pandas = require_pandas("DexCareHook.get_df")
    chunksize = _check_chunksize(chunksize)
    request = _which_report(report_id, report_type, start_date, end_date)
    keys = list(key_columns)

    def chunks() -> Iterator[pd.DataFrame]:
        found = report_id
        if request is not None:
            found = hook.start_report(request.report_type.value, request.start_date, request.end_date)
            found = wait.wait(hook, found, request, hook.log)
        assert found is not None
        with _private_download(hook, found, temp_dir) as path, path.open("rb") as stream:
            yield from _frames(pandas, stream, f"DexCare report {found}", lambda _source: path.open("rb"),
                               chunksize, keys, timestamp_columns)

    return chunks()


def report_frame(hook: DexCareHook, report_id: str | None, **kwargs: Any) -> pd.DataFrame:
    """:func:`report_chunks` put together (same arguments but ``chunksize``)."""
    chunks = report_chunks(hook, report_id, chunksize=WHOLE_FRAME_PIECE, **kwargs)
    return _whole(require_pandas("DexCareHook.get_df"), chunks)


def _which_report(report_id: str | None, report_type: str | None, start_date: Any, end_date: Any
                  ) -> ReportRequest | None:
    """A report id, or a type and window to request; never both, never neither."""
    if report_id is not None:
        if report_type is not None or start_date is not None or end_date is not None:
            raise DexCareValidationError(
                "Give either report_id (a report DexCare already built) or report_type with start_date/end_date "
                "(a report to request now), not both."
            )
        validate_report_id(report_id)
        return None
    if report_type is None:
        raise DexCareValidationError(
            "Say which report: report_id='<guid>' to download one, or report_type='virtual' (with start_date and "
            "end_date, or none for DexCare's default window) to request one and wait for it."
        )
    return ReportRequest.build(report_type, start_date, end_date)


@contextmanager
def _private_download(hook: DexCareHook, report_id: str, temp_dir: str | os.PathLike[str] | None
                      ) -> Iterator[Path]:
    """The report in a fresh 0700 directory (``mkdtemp``), removed with everything in it (a ``.part`` file of a
    broken download too) on every way out."""
    directory = Path(tempfile.mkdtemp(prefix="dexcare-frame-", dir=temp_dir))
    try:
        path = directory / "report.csv"
        hook.download_report(report_id, path)
        yield path
    finally:
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            log.warning("Could not remove the temporary report directory %s (%s); it holds patient data: delete "
                        "it by hand.", directory, type(exc).__name__)


# --- reading -------------------------------------------------------------------------------------------------------


def _frames(pd: Any, stream: BinaryIO, source: str, opener: Callable[[str], BinaryIO], chunksize: int,
            key_columns: list[str], timestamp_columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
    header = read_header(stream, source=source)
    columns = normalize_headers(header.fields, source=source)
    # The key is looked for in the header before any record is read, as the load does.
    keys = resolve_columns(key_columns, columns, what="key", source=source)
    rows = records(header, stream, source=source, columns=len(columns), opener=opener)
    sample = list(islice(rows, SAMPLE_ROWS))
    shape = FrameColumns.decide(source=source, headers=header.fields, columns=columns, key_columns=keys,
                                timestamp_columns=timestamp_columns, sample=[fields for _line, fields in sample])
    log.info("Reading %s: %d columns, key %s, timestamps %s.", source, len(columns), ", ".join(shape.keys),
             ", ".join(shape.timestamps) or "none")
    done = 0
    everything = chain(sample, rows)
    while True:
        batch = list(islice(everything, chunksize))
        if batch or not done:  # an empty report is one empty frame, with its columns and dtypes
            yield shape.frame(pd, [fields for _line, fields in batch], [line for line, _fields in batch], done)
        done += len(batch)
        if len(batch) < chunksize:
            break
    log.info("Read %s: %d rows.", source, done)


def _whole(pd: Any, chunks: Iterator[pd.DataFrame]) -> pd.DataFrame:
    pieces = list(chunks)
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces)


def _check_chunksize(chunksize: Any) -> int:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise DexCareValidationError(f"chunksize must be a positive number of rows, got {chunksize!r}.")
    return chunksize
