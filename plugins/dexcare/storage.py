"""Where report files live: the one place that turns a location into a path, a URI, a stream, or a deletion.

The download writes a file, the load reads it and the clean-up deletes it, often on different machines. They
must agree on what a location string means, or a file is loaded and never deleted, or written to one directory
and looked for in another. So they all go through :class:`ReportLocation`:

- a bare path (``/data/dexcare``) and a ``file://`` URI are files on a disk. A ``file://`` URI is
  percent-decoded (RFC 8089: ``Path.as_uri()`` and browsers write a space as ``%20``); a bare path is taken
  literally. A local file's URI is always the percent-encoded ``file://`` form.
- anything else (``s3://conn_id@bucket/key``, ``gs://``, ``abfs://``) is an Airflow ``ObjectStoragePath``; its
  key is taken literally, as fsspec and S3 do (``%`` is a legal key character), and its URI keeps the
  connection id so another worker reaches the same store with the same credentials.

A location is checked when it is parsed, so ``plan``, an operator's ``destination`` and the load all refuse the
same values, before anything is written: a relative path (a typo such as ``ftp//host`` is one, and would put
patient files under whatever directory the worker runs in), credentials before the ``@`` (they would travel in
XCom and log lines; the connection id belongs there), an object store without a bucket (``s3://`` would make
the first directory below it the bucket), and a protocol this installation cannot write to. The last comes
from what is installed, not from a list: Airflow's own resolution of the path's filesystem (its providers'
filesystems and stores attached with ``attach()``) and the import of fsspec's implementation. No message
quotes a location but through :func:`dexcare.redaction.redact_url`.

Writes are all-or-nothing on every store: a local file appears by an atomic rename of a private (0600)
temporary sibling; an object-store upload is a multipart upload in bounded parts that is completed only when
the caller's block finished without an error, and aborted otherwise. (fsspec's own ``with`` block would
complete it even while an exception propagates, leaving a truncated object that looks finished.)
A process killed mid-write (SIGKILL: the OOM killer, a task timeout's escalation, a lost node) runs no
clean-up: its private partial or its incomplete multipart upload stays. The next try of the same file removes
them before it writes, and the clean-up after a committed load (:func:`clean_up_run`) removes those of every
report of the run.

The deployment-wide default is the provider option ``[dexcare] report_storage``
(``AIRFLOW__DEXCARE__REPORT_STORAGE``). Without it, reports go to a private directory on the worker's own disk,
which only works when one machine runs every task: :func:`check_storage_reaches_every_worker` refuses that
combination before any report is requested.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import unquote, urlsplit

from dexcare.exceptions import DexCareReportFileMissingError, DexCareStorageError
from dexcare.redaction import redact, redact_url

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_SECTION = "dexcare"
CONFIG_OPTION = "report_storage"
CONFIG_ENV = "AIRFLOW__DEXCARE__REPORT_STORAGE"
SETTING = f"[{CONFIG_SECTION}] {CONFIG_OPTION}"
EXAMPLE_STORAGE = "s3://aws_default@my-bucket/dexcare/"
#: Under ``$AIRFLOW_HOME``; created 0700 because reports hold patient visit data.
DEFAULT_DIRECTORY = "dexcare-reports"
#: Multipart part size and read-ahead block for object stores: memory per open file stays about this big
#: whatever the report's size (S3 allows 10,000 parts, so up to 80 GiB per file; its minimum part is 5 MiB).
PART_BYTES = 8 << 20
#: Executors that run every task on the machine of the scheduler that launched them.
SINGLE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
_LOCAL_PROTOCOLS = ("", "file", "local")
#: What may stand before ``@`` in an object-store URI: an Airflow connection id, never a key or a password.
_CONNECTION_ID = re.compile(r"[A-Za-z0-9_.\-]+")
#: Whose value a location is, in messages, when the caller does not say (an operator's destination, an XCom).
LOCATION = "the report location"
VALID_FORMS = (
    f"a URI such as {EXAMPLE_STORAGE} (an Airflow connection id before '@', the key or secret in that "
    "connection), file:///mnt/shared/dexcare/ on a volume every worker mounts, or an absolute path"
)


class ReportLocation:
    """A report file (or directory) on this machine's disk or in an object store.

    Build it with :meth:`parse`; ``str(location)`` is its URI, the form that travels in XCom.
    """

    __slots__ = ("_local", "_remote")

    def __init__(self, *, local: Path | None = None, remote: ObjectStoragePath | None = None) -> None:
        if (local is None) == (remote is None):
            raise ValueError("A ReportLocation is either local or remote.")
        if remote is not None:  # every way in, so no URI this class hands out (XCom, logs) can hold a secret
            _refuse_credentials(str(remote), LOCATION)
        self._local = local
        self._remote = remote

    @classmethod
    def parse(
        cls, where: str | os.PathLike[str] | ObjectStoragePath | ReportLocation, source: str = LOCATION
    ) -> ReportLocation:
        """Read a bare absolute path, a ``file://`` URI, an object-store URI, a ``Path`` or an
        ``ObjectStoragePath``; refuse what cannot work (see the module's docstring) with a
        :class:`DexCareStorageError` that names ``source`` (where the value came from) and a valid form."""
        if isinstance(where, ReportLocation):
            return where
        protocol = getattr(where, "protocol", None)
        if protocol is not None:  # an ObjectStoragePath (or another UPath) already parsed
            if protocol in _LOCAL_PROTOCOLS:
                return cls(local=Path(cast("ObjectStoragePath", where).path))
            _check_remote_text(str(where), source)
            return cls(remote=cast("ObjectStoragePath", where))
        if isinstance(where, os.PathLike):
            return cls(local=Path(where).expanduser().absolute())
        text = str(where).strip()
        if not text:
            raise DexCareStorageError(f"An empty report location ({source}): give {VALID_FORMS}.")
        scheme = urlsplit(text).scheme.lower() if "://" in text else ""
        if scheme in _LOCAL_PROTOCOLS:
            return cls(local=_local_path(text, scheme, source))
        _check_remote_text(text, source)
        return cls(remote=_object_store_path(text, scheme, source))

    # --- naming ------------------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self._local is not None

    @property
    def uri(self) -> str:
        if self._local is not None:
            return self._local.as_uri()
        return str(self._remote)

    @property
    def display(self) -> str:
        """The plain path for a local file (what a shell user types), the URI otherwise."""
        return str(self._local) if self._local is not None else self.uri

    @property
    def name(self) -> str:
        return self._local.name if self._local is not None else self._remote.name  # type: ignore[union-attr]

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ReportLocation({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReportLocation) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def child(self, name: str) -> ReportLocation:
        if self._local is not None:
            return ReportLocation(local=self._local / name)
        return ReportLocation(remote=self._remote / name)  # type: ignore[operator]

    # --- reading, writing, deleting ----------------------------------------------------------------------

    def exists(self) -> bool:
        if self._local is not None:
            return self._local.exists()
        return bool(self._remote.exists())  # type: ignore[union-attr]

    def open(self) -> BinaryIO:
        """A binary stream for reading; a file that is not there raises :class:`DexCareReportFileMissingError`.

        Local files are opened directly (no fsspec layer in the hot loop); object stores read ahead
        ``PART_BYTES`` at a time (s3fs would otherwise read 50 MiB blocks).
        """
        try:
            if self._local is not None:
                return self._local.open("rb")
            return self._remote.open("rb", block_size=PART_BYTES)  # type: ignore[union-attr]
        except FileNotFoundError:
            raise DexCareReportFileMissingError(self._missing_message()) from None

    @contextmanager
    def write(self) -> Iterator[BinaryIO]:
        """Write the file all-or-nothing: it appears only if the ``with`` block finishes without an error.

        An existing file is replaced only then, and never left half-written.
        """
        writer = _write_local if self._local is not None else _write_remote
        with writer(self._local if self._local is not None else self._remote) as out:  # type: ignore[arg-type]
            yield out

    def delete(self) -> bool:
        """Delete the file; ``False`` if it was already gone (the caller says so instead of claiming it)."""
        try:  # one request on an object store: its unlink() raises FileNotFoundError itself
            (self._local if self._local is not None else self._remote).unlink()  # type: ignore[union-attr]
        except FileNotFoundError:
            return False
        return True

    # --- the directory a report lies in, for the clean-up --------------------------------------------------

    @property
    def parent(self) -> ReportLocation:
        if self._local is not None:
            return ReportLocation(local=self._local.parent)
        remote: Any = self._remote
        return ReportLocation(remote=remote.parent)

    def is_run_directory(self, dag_id: str | None, run_id: str | None) -> bool:
        """Whether this is the directory :func:`run_directory` names for this very run: the provider's own,
        which holds nothing but this run's reports."""
        if not dag_id or not run_id:
            return False
        return self.name == safe_name(run_id) and self.parent.name == safe_name(dag_id)

    def files(self) -> list[ReportLocation]:
        """The files (objects) directly in this directory; none if it does not exist."""
        if self._local is not None:
            try:
                with os.scandir(self._local) as entries:
                    return [self.child(e.name) for e in entries if e.is_file(follow_symlinks=False)]
            except FileNotFoundError:
                return []
        remote: Any = self._remote
        fs = remote.fs
        fs.invalidate_cache(remote.path)  # another process wrote there; s3fs would answer from its cache
        try:
            listed = fs.ls(remote.path, detail=True)
        except FileNotFoundError:
            return []
        return [self.child(entry["name"].rstrip("/").rsplit("/", 1)[-1]) for entry in listed
                if entry.get("type") == "file"]

    def incomplete_uploads(self) -> list[tuple[str, str]]:
        """``(file name, upload id)`` of the multipart uploads begun directly in this directory and neither
        completed nor aborted: invisible as objects, still holding data. Only S3 (s3fs) can list them; Google
        Cloud Storage and Azure expire unfinished uploads themselves (after a week)."""
        if self._local is not None:
            return []
        remote: Any = self._remote
        if not hasattr(remote.fs, "call_s3"):
            return []
        bucket, key = _bucket_and_key(remote)
        prefix = f"{key.rstrip('/')}/" if key else ""
        found: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            answer = remote.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
            for upload in answer.get("Uploads", []):
                name = upload["Key"][len(prefix):]
                if name and "/" not in name:
                    found.append((name, upload["UploadId"]))
            if not answer.get("IsTruncated"):
                return found
            markers = {"KeyMarker": answer["NextKeyMarker"], "UploadIdMarker": answer["NextUploadIdMarker"]}

    def abort_upload(self, upload_id: str) -> None:
        """Abort one incomplete multipart upload of this object: S3 then frees its parts."""
        remote: Any = self._remote
        bucket, key = _bucket_and_key(remote)
        remote.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    def remove_directory(self) -> None:
        """rmdir of a local directory; one already gone is fine, one that is not empty raises (something is
        left in it). Object stores have no directories to leave behind."""
        if self._local is None:
            return
        with suppress(FileNotFoundError):
            self._local.rmdir()

    def _missing_message(self) -> str:
        where = f"{self.uri}: cannot open the report file"
        if self._local is not None:
            return (
                f"{where}: it is not on this worker ({socket.gethostname()}). It was downloaded on another "
                "machine (the report storage is a directory on the worker's own disk, which only works when one "
                "machine runs every task), or it was deleted. Fix: with several workers, set "
                f"{SETTING} ({CONFIG_ENV}) to storage every worker reaches, e.g. {EXAMPLE_STORAGE}; then clear "
                "this run's download_report tasks (they download the report again) and this task."
            )
        return (
            f"{where}: it is not in the object store. It was deleted (an earlier load of this run deletes its "
            "files after the commit) or a bucket lifecycle rule expired it. Fix: clear this run's download_report "
            "tasks (they download the report again) and this task; if a lifecycle rule removes objects under this "
            "prefix, let them live longer than a run takes."
        )


# --- the destination of a run ------------------------------------------------------------------------------


def configured_storage() -> str:
    """The deployment-wide ``[dexcare] report_storage`` (empty when not set)."""
    from airflow.providers.common.compat.sdk import conf

    return (conf.get(CONFIG_SECTION, CONFIG_OPTION, fallback="") or "").strip()


def storage_choice(param: str | None) -> tuple[str, str]:
    """The base storage for a run and where that choice came from, for messages: the run's ``storage`` param,
    else ``[dexcare] report_storage``, else the worker-local default."""
    if param and str(param).strip():
        return str(param).strip(), "the run's storage param"
    configured = configured_storage()
    if configured:
        return configured, SETTING
    return str(default_root()), f"the default, as {SETTING} is not set"


def check_storage(storage: str, source: str) -> ReportLocation:
    """The base storage of a run, parsed: the one validating parse, for ``plan`` (and :func:`run_directory`),
    with ``source`` naming the setting the value came from (see :func:`storage_choice`)."""
    return ReportLocation.parse(storage, source)


def default_root() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser() / DEFAULT_DIRECTORY


def run_directory(storage: str | None, dag_id: str, run_id: str) -> str:
    """Directory URI (ending in ``/``) for one DAG run's reports: ``<storage>/<dag_id>/<run_id>/``.

    ``storage`` wins, then ``[dexcare] report_storage``, then ``$AIRFLOW_HOME/dexcare-reports`` on the worker.
    Runs never share a directory, so a backfill next to the daily run cannot overwrite or delete its files.
    Nothing is created here: the writer creates private directories when the first file arrives.
    """
    base = check_storage(*((storage, LOCATION) if storage else storage_choice(None)))
    return f"{base.child(safe_name(dag_id)).child(safe_name(run_id)).uri}/"


def file_location(destination: str | os.PathLike[str] | ObjectStoragePath, filename: str) -> ReportLocation:
    """A destination ending in ``/`` is a directory, and the file is ``filename`` in it; anything else is the
    file itself."""
    location = ReportLocation.parse(destination)
    return location.child(filename) if str(destination).endswith("/") else location


def safe_name(part: str) -> str:
    """Run ids contain ':' and '+'; keep names portable across local disks and object stores."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"


def report_file_name(report_type: str, start_date: object, end_date: object, report_id: str) -> str:
    """download_report's file name: the report's type and window, then its id.

    Every try of a run asks for the same type and window, so a report of a cleared run lands beside the one it
    supersedes under a new name, and the clean-up (:func:`clean_up_run`) recognises both as this run's.
    """
    window = f"_{start_date}_{end_date}" if start_date else ""
    return f"dexcare_{report_type}{window}_{report_id}.csv"


_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_DATE = r"\d{4}-\d{2}-\d{2}"
#: A name :func:`report_file_name` gives; ``report`` is the part every try of a run shares.
REPORT_FILE = re.compile(rf"dexcare_(?P<report>[a-z_]+(?:_{_DATE}_{_DATE})?)_{_GUID}\.csv")
#: The private sibling a local write fills before its rename: ``.<target name>.<32 hex>.part``.
PARTIAL_FILE = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{32}\.part")


def _run_of(name: str) -> str | None:
    match = REPORT_FILE.fullmatch(name)
    return match["report"] if match else None


def belongs_to(name: str, loaded: Iterable[str]) -> bool:
    """Whether the provider wrote file ``name`` for one of the ``loaded`` files of its directory: the file
    itself, a report of the same type and window with another id (a try the run was cleared from), or the
    partial a killed write of any of these left."""
    target = _target_of(name)
    loaded = set(loaded)
    if target in loaded:
        return True
    report = _run_of(target)
    return report is not None and report in {_run_of(other) for other in loaded}


def _removable(name: str, loaded: Iterable[str], *, own: bool) -> bool:
    """What the clean-up deletes beside the loaded files: what :func:`belongs_to` them, and in the run's own
    directory also anything else, except another report of the run (another type or window) that a later
    load task of the same run may still read; that load removes it."""
    if belongs_to(name, loaded):
        return True
    return own and _run_of(_target_of(name)) is None


def _target_of(name: str) -> str:
    unfinished = PARTIAL_FILE.fullmatch(name)
    return unfinished["target"] if unfinished else name


@dataclass
class CleanUp:
    """What :func:`clean_up_run` did; ``failed`` entries name the file and the error's type, never content."""

    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def attempt(self, what: str, action: Callable[[], T]) -> tuple[bool, T | None]:
        """Run one step; a failure is recorded against ``what`` instead of raised."""
        try:
            return True, action()
        except Exception as exc:  # whatever the store raises (OSError, botocore's ClientError, ...)
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else redact(str(exc))[:200]
            self.failed.append(f"{what} ({type(exc).__name__}{': ' + detail if detail else ''})")
            return False, None


def clean_up_run(files: Iterable[ReportLocation | str], dag_id: str | None, run_id: str | None) -> CleanUp:
    """After a committed load: delete its files and whatever else of the run the provider left beside them.

    In the run's own directory (:func:`run_directory`, ``<dag_id>/<run_id>/``) everything goes but the reports
    of another type or window that a later load task of the same run may still read (``kept``), and a local
    one is then removed, never the ``<dag_id>`` level, where another run may be creating its own at the same
    moment. In a directory a user named, only what :func:`belongs_to` the loaded files: never another file of
    theirs, and the directory stays. "Everything else" is the partials of killed downloads, incomplete
    multipart uploads, and earlier reports of a run that was cleared from ``start_report`` (a failed load
    keeps its file for diagnosis; the new try's report has a new id, so a new name). Nothing raises: each
    failure is collected, so one unreachable file does not keep the others. ``files`` are the loaded files'
    locations (the load's hand-off records parsed them: :mod:`dexcare.handoff`) or their URIs.
    """
    done = CleanUp()
    loaded = [ReportLocation.parse(file) for file in files]
    for location in dict.fromkeys(loaded):
        ok, deleted = done.attempt(location.display, location.delete)
        if ok:
            (done.deleted if deleted else done.already_gone).append(location.display)
    directories: dict[ReportLocation, set[str]] = {}
    for location in loaded:
        directories.setdefault(location.parent, set()).add(location.name)
    for directory, names in directories.items():
        own = directory.is_run_directory(dag_id, run_id)
        kept = len(done.kept)
        _, listed = done.attempt(f"the listing of {directory.display}", directory.files)
        for leftover in listed or []:
            if not _removable(leftover.name, names, own=own):
                done.kept.append(leftover.display)
                continue
            ok, deleted = done.attempt(leftover.display, leftover.delete)
            if ok and deleted:
                done.leftovers.append(leftover.display)
        _, uploads = done.attempt(f"the incomplete uploads under {directory.display}", directory.incomplete_uploads)
        for name, upload_id in uploads or []:
            if _removable(name, names, own=own):
                target = directory.child(name)
                ok, _ = done.attempt(f"the incomplete upload of {target.display}",
                                     functools.partial(target.abort_upload, upload_id))
                if ok:
                    done.leftovers.append(f"{target.display} (incomplete upload)")
        if own and not done.failed and len(done.kept) == kept:
            done.attempt(directory.display, directory.remove_directory)
    return done


# --- is the storage reachable from every worker? -------------------------------------------------------------


def executor_names(setting: str) -> list[str]:
    """Class names in ``[core] executor``: a comma-separated list in Airflow 3, each an alias, a name or a
    module path, optionally ``alias:module.path.Class``."""
    names = []
    for entry in setting.split(","):
        entry = entry.strip()
        if entry:
            names.append(entry.rsplit(":", 1)[-1].rsplit(".", 1)[-1].strip())
    return names


def runs_on_several_machines(executor_setting: str) -> bool:
    """Whether tasks of one run may land on different machines. Celery, Kubernetes, Edge, ECS and any executor
    we do not know may; only the executors that run tasks beside the scheduler may not."""
    names = executor_names(executor_setting)
    return not names or any(name not in SINGLE_MACHINE_EXECUTORS for name in names)


def check_storage_reaches_every_worker(storage: str, source: str, executor_setting: str) -> None:
    """Refuse a worker-local directory when tasks can run on several machines, before any report is requested.

    A ``file://`` URI counts as shared: writing one is how a deployment says "a volume every worker mounts".
    A bare path, or the default directory under ``$AIRFLOW_HOME``, is the worker's own disk.
    """
    location = check_storage(storage, source)
    declared_shared = storage.strip().lower().startswith("file://")
    if not location.is_local or declared_shared or not runs_on_several_machines(executor_setting):
        return
    raise DexCareStorageError(
        f"Report storage is {location.display} ({source}), a directory on the worker's own disk, but "
        f"[core] executor = {executor_setting} runs tasks on several machines: download_report and load_reports "
        f"can run on different workers, and the load would not find the files. Set {SETTING} "
        f"({CONFIG_ENV}) to storage every worker reaches, e.g. {EXAMPLE_STORAGE}, or "
        "file:///mnt/shared/dexcare/ on a volume every worker mounts (or pass the storage param for one run). "
        "No report was requested."
    )


def executor_setting() -> str:
    from airflow.providers.common.compat.sdk import conf

    return str(conf.get("core", "executor", fallback="") or "")


# --- internals -----------------------------------------------------------------------------------------------


def _refused(text: str, source: str, problem: str) -> DexCareStorageError:
    """The one form of every refusal: the value (its user-info masked), where it came from, why, and the fix."""
    return DexCareStorageError(
        f"Report storage {_shown(text)} ({source}) {problem}. Fix: give {VALID_FORMS}, in {SETTING} "
        f"({CONFIG_ENV}), the daily DAG's storage param or an operator's destination."
    )


def _shown(text: str) -> str:
    """The value for a message: a URI with its user-info masked; a value without ``scheme://`` that holds an
    ``@`` (``KEY:SECRET@bucket``, the scheme forgotten) is not quoted at all, as no URL rule can tell its parts."""
    if "://" not in text and "@" in text:
        return "(not quoted: it holds an '@' but no scheme://)"
    return repr(redact_url(text))


def _local_path(text: str, scheme: str, source: str) -> Path:
    if not scheme:
        path = Path(text).expanduser()
        if not path.is_absolute():
            raise _refused(
                text,
                source,
                "is neither a URI (scheme://...) nor an absolute path: a relative path would put patient files "
                "under whatever directory the worker happens to run in (a typo such as a missing ':' in "
                "'scheme://' makes one)",
            )
        return path
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise _refused(
            text,
            source,
            f"names host {parts.netloc.rpartition('@')[2]!r}: a file:// URI is a path on the worker's own "
            "filesystem, written file:///path (three slashes), e.g. file:///mnt/shared/dexcare/",
        )
    unquoted = unquote(parts.path)
    if not unquoted.startswith("/"):
        raise _refused(text, source, "is not an absolute file:// URI: write file:///absolute/path")
    return Path(unquoted)


def _bucket_and_key(remote: Any) -> tuple[str, str]:
    """From the fsspec path (``bucket/key``): ``ObjectStoragePath.bucket`` keeps the ``conn_id@`` on Airflow 3.0."""
    bucket, _, key = str(remote.path).partition("/")
    return bucket, key


def _refuse_credentials(text: str, source: str) -> None:
    """Only an Airflow connection id may stand before ``@``: a key or a password there would be copied into
    every XCom, log line and audit row that names the file."""
    netloc = urlsplit(text).netloc if "://" in text else ""
    user_info, at, _host = netloc.rpartition("@")
    if at and not _CONNECTION_ID.fullmatch(user_info):
        raise _refused(
            text,
            source,
            "carries credentials before '@': only the id of an Airflow connection may stand there "
            "(s3://<conn id>@<bucket>/<prefix>/), and the key and secret go into that connection, never into "
            "the URI. Rotate a secret that was written here",
        )


def _check_remote_text(text: str, source: str) -> None:
    """What can be told from the text alone: credentials, and a bucket to write into."""
    _refuse_credentials(text, source)
    parts = urlsplit(text)
    bucket = parts.netloc.rpartition("@")[2] or parts.path.lstrip("/").partition("/")[0]
    if not bucket:
        raise _refused(
            text,
            source,
            f"names no bucket: {parts.scheme}://<conn id>@<bucket>/<prefix>/ (without one, the first directory "
            "below it would be taken as the bucket)",
        )


def _object_store_path(text: str, scheme: str, source: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` whose filesystem this installation can build.

    The filesystem is resolved here as every later read and write resolves it (a store attached in this
    process with ``attach()``, else the filesystem an Airflow provider registers for the protocol, with
    fsspec's implementation imported), so a protocol nothing installed serves is refused before a report is
    requested, not when the download has the file in hand. It is resolved outside Airflow's store cache: a
    refused value must not leave a broken store behind for a later ``attach()`` in the same process.
    """
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from airflow.sdk.io.store import ObjectStore
    from fsspec.registry import known_implementations, registry

    if scheme not in registry and scheme not in known_implementations:
        raise _refused(
            text, source, f"names protocol {scheme!r}, which is no storage protocol that fsspec knows (a typo?)"
        )
    conn_id = urlsplit(text).netloc.rpartition("@")[0] or None
    try:
        store = attach(alias=f"{scheme}-{conn_id}" if conn_id else scheme)  # only finds, never registers
    except ValueError:
        store = ObjectStore(protocol=scheme, conn_id=conn_id)
    try:
        _ = store.fs
    except ValueError as exc:
        if not str(exc).startswith("No filesystem registered"):  # the provider's own check of its connection
            raise _refused(
                text, source, f"cannot be set up: its filesystem refused connection {conn_id!r} (ValueError)"
            ) from None
        raise _refused(
            text,
            source,
            f"names protocol {scheme!r}, for which no filesystem is available here: no Airflow provider "
            "installed supplies one and none was attached (a web protocol such as http:// is no storage at all; "
            "for a cloud store, install its Airflow provider on every Airflow component)",
        ) from None
    except ImportError as exc:  # the provider's filesystem is there, fsspec's implementation is not installed
        raise _refused(text, source, f"needs a package that is not installed ({redact(str(exc))})") from None
    return ObjectStoragePath(text)


def _private_dir(path: Path) -> None:
    """mkdir -p with 0700 on every level we create (``Path.mkdir`` applies ``mode`` to the last one only)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


@contextmanager
def _write_local(path: Path) -> Iterator[BinaryIO]:
    _private_dir(path.parent)
    _remove_stale_partials(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(partial, path)
    except BaseException:
        with suppress(OSError):
            partial.unlink()
        raise


def _remove_stale_partials(path: Path) -> None:
    """The partials of this very file that killed earlier tries left: a SIGKILL runs no ``except`` block.

    Two tries of one task never write at once, so any partial of the same target is stale.
    """
    with os.scandir(path.parent) as entries:
        stale = [e.path for e in entries if (m := PARTIAL_FILE.fullmatch(e.name)) and m["target"] == path.name]
    for name in stale:
        with suppress(FileNotFoundError):
            os.unlink(name)
    if stale:
        log.info("Removed %d partial file(s) of %s left by an earlier try that was killed.", len(stale), path)


@contextmanager
def _write_remote(path: ObjectStoragePath) -> Iterator[BinaryIO]:
    """fsspec's transaction protocol: ``autocommit=False`` uploads parts but completes nothing until
    ``commit()``; ``discard()`` aborts. s3fs, gcsfs and adlfs implement it."""
    _abort_stale_uploads(path)
    handle = path.open("wb", block_size=PART_BYTES, autocommit=False)
    try:
        yield handle
        handle.close()  # uploads the last part; the object does not exist yet
        handle.commit()
    except BaseException:
        _abandon(handle, path)
        raise


def _abort_stale_uploads(path: ObjectStoragePath) -> None:
    """The incomplete multipart uploads of this very object that killed earlier tries left. Best effort: the
    clean-up after the load tries again, so a store that cannot list them does not fail the download."""
    location = ReportLocation(remote=path)
    try:
        stale = [upload for name, upload in location.parent.incomplete_uploads() if name == location.name]
        for upload_id in stale:
            location.abort_upload(upload_id)
    except Exception as exc:
        log.warning("Could not look for incomplete uploads of %s left by an earlier try (%s); the clean-up after "
                    "the load looks again.", path, type(exc).__name__)
        return
    if stale:
        log.info("Aborted %d incomplete upload(s) of %s left by an earlier try that was killed.", len(stale), path)


def _abandon(handle: Any, path: ObjectStoragePath) -> None:
    """Abort an unfinished upload so no object appears, and make sure nothing completes it later."""
    from fsspec.spec import AbstractBufferedFile

    raw = getattr(handle, "_obj", handle)  # ObjectStoragePath wraps the fsspec file to record lineage
    try:
        raw.discard()
    except Exception as exc:
        log.warning(
            "Could not abort the unfinished upload to %s (%s): its parts stay invisible until a bucket rule "
            "for incomplete multipart uploads removes them.",
            path,
            type(exc).__name__,
        )
    if isinstance(raw, AbstractBufferedFile):
        raw.closed = True  # close() (also from __del__) would otherwise start the upload again
