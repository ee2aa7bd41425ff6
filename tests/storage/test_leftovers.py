"""Nothing of a patient stays behind on disk: a download killed mid-stream, a run cleared from start_report.

The tries run as separate ``python`` processes (tests/support/task_try.py) against the sandbox, as a worker runs
them: a SIGKILL runs no ``except`` block, so only a real killed process shows what it leaves. The load is the
operator with ``delete_files`` on, against the embedded PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dexcare.operators.download_report import DexCareDownloadReportOperator
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.report import ReportStatus
from dexcare.sandbox import SandboxServer
from dexcare.storage import PARTIAL_FILE, report_file_name, safe_name

from tests.support.airflow_cli import postgres_connection
from tests.support.helpers import SANDBOX_TOKEN, fast_hook, set_connection
from tests.support.processes import wait_for
from tests.support.task_runtime import Runtime
from tests.support.task_try import DAG_ID, RUN_ID, finished, kill_mid_stream, spawn
from tests.support.warehouse import audit_rows, scratch_schema

START, END = "2026-11-01", "2026-11-04"


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``[dexcare] report_storage`` for this process and every try: the run directory is below it."""
    root = tmp_path / "reports"
    monkeypatch.setenv("AIRFLOW__DEXCARE__REPORT_STORAGE", str(root))
    return root


@pytest.fixture
def run_dir(storage: Path) -> Path:
    return storage / DAG_ID / safe_name(RUN_ID)


@pytest.fixture
def big_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """Reports of about 9 MiB: a download takes long enough to be caught mid-stream and killed."""
    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0, run_seconds=0, visits_per_day=10_000) as server:
        set_connection(monkeypatch, "dexcare_default", server.url, SANDBOX_TOKEN)
        yield server


@pytest.fixture
def schema(pg_uri: str) -> Iterator[str]:
    with scratch_schema(pg_uri, "dexcare_leftovers") as name:
        yield name


def succeeded(report_type: str = "virtual") -> str:
    hook = fast_hook()
    report_id = hook.start_report(report_type, START, END)
    wait_for("the report to succeed", lambda: hook.get_report_status(report_id) == ReportStatus.SUCCEEDED, 60, 0.05)
    return report_id


def load(reports: list[dict[str, Any]], schema: str, pg_uri: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", postgres_connection(pg_uri))
    op = DexCareLoadReportsOperator(task_id="load", reports=reports, schema=schema, delete_files=True)
    return op.execute({"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": RUN_ID,
                       "data_interval_end": dt.datetime(2026, 11, 4, tzinfo=dt.UTC)})


def partial_in(directory: Path) -> Callable[[], Path | None]:
    def mid_stream() -> Path | None:
        partials = [p for p in directory.glob(".*.part") if p.stat().st_size > 0] if directory.is_dir() else []
        return partials[0] if partials else None

    return mid_stream


@pytest.mark.slow
def test_a_killed_download_leaves_only_a_private_partial_that_the_retry_and_the_load_remove(
    big_sandbox, storage, run_dir, schema, pg_uri, admin, monkeypatch
) -> None:
    report_id = succeeded()
    partial = kill_mid_stream(spawn(START, END, "--report-id", report_id), partial_in(run_dir))
    target = report_file_name("virtual", START, END, report_id)
    # Meanwhile: hidden, private, and never under the name the load reads.
    assert PARTIAL_FILE.fullmatch(partial.name)["target"] == target
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    assert [p.name for p in run_dir.iterdir()] == [partial.name]

    # The retry (download_report's next try, same report, same file name) removes its own stale partial.
    result = Runtime().run(DexCareDownloadReportOperator(
        task_id="download", report_id=report_id, report_type="virtual", report_start_date=START,
        report_end_date=END,
    ))
    assert [p.name for p in run_dir.iterdir()] == [target]

    # A second killed try leaves another partial; the committed load removes it with the file and the directory.
    kill_mid_stream(spawn(START, END, "--report-id", report_id), partial_in(run_dir))
    assert len(list(run_dir.iterdir())) == 2
    summary = load([result], schema, pg_uri, monkeypatch)
    assert summary["tables"]["avr_virtual"]["rows_in_file"] == result["rows"] > 0
    assert not run_dir.exists(), list(run_dir.iterdir())
    assert [p.name for p in (storage / DAG_ID).iterdir()] == []


@pytest.mark.slow  # two tries, each a fresh interpreter importing Airflow
def test_a_run_cleared_from_start_report_leaves_neither_report_after_its_load(
    dexcare_conn_id, sandbox, storage, run_dir, schema, pg_uri, admin, monkeypatch
) -> None:
    """Try 1 downloaded report A and its load failed (the CSV is kept for diagnosis); on-call cleared the run
    from start_report, so try 2 started report B, whose file has another name. B's load deletes both."""
    first = finished(START, END)
    second = finished(START, END)
    assert first["report_id"] != second["report_id"]
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == sorted(Path(r["uri"]).name for r in (first, second))
    summary = load([second], schema, pg_uri, monkeypatch)
    assert [r["report_id"] for r in summary["reports"]] == [second["report_id"]]
    assert len(audit_rows(admin, schema)) == 1
    assert not run_dir.exists(), list(run_dir.iterdir())


def test_in_a_directory_the_user_named_only_this_runs_reports_and_partials_go(tmp_path: Path) -> None:
    """A destination shared by many runs: the loaded file, an earlier report of the same type and window (a
    cleared run), the partials of killed writes of either; nothing of another window or type, nor a user's file."""
    from dexcare.storage import clean_up_run

    directory = tmp_path / "chosen"
    directory.mkdir()
    loaded = report_file_name("virtual", START, END, "11111111-1111-4111-8111-111111111111")
    superseded = report_file_name("virtual", START, END, "22222222-2222-4222-8222-222222222222")
    other_window = report_file_name("virtual", "2026-11-02", "2026-11-05", "33333333-3333-4333-8333-333333333333")
    other_type = report_file_name("retail", START, END, "44444444-4444-4444-8444-444444444444")
    hidden = f".{superseded}.{'a' * 32}.part"
    mine = {loaded, superseded, hidden, f".{loaded}.{'b' * 32}.part"}
    kept = {other_window, other_type, f".{other_window}.{'c' * 32}.part", "notes.csv", "dexcare_virtual.csv"}
    for name in mine | kept:
        (directory / name).write_bytes(b"visitId\n")
    done = clean_up_run([(directory / loaded).as_uri()], DAG_ID, RUN_ID)
    assert done.failed == []
    assert {p.name for p in directory.iterdir()} == kept
    assert sorted(Path(d).name for d in done.leftovers) == sorted(mine - {loaded})


def test_the_provider_names_partials_the_way_the_clean_up_recognises_them(tmp_path: Path) -> None:
    """A control for the pattern: a partial really written by the storage layer matches it."""
    from dexcare.storage import ReportLocation

    name = report_file_name("virtual", START, END, "11111111-1111-4111-8111-111111111111")
    location = ReportLocation.parse(tmp_path / name)
    with location.write() as out:
        out.write(b"visitId\n")
        (written,) = tmp_path.iterdir()
        assert PARTIAL_FILE.fullmatch(written.name)["target"] == name
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_in_the_runs_own_directory_all_goes_but_a_report_another_load_task_may_still_read(tmp_path: Path) -> None:
    """The run's own directory is emptied and removed; only a report of another type (a DAG with one load task
    per type) stays for its own load, which then removes it and the directory."""
    from dexcare.storage import ReportLocation, clean_up_run, run_directory

    run_dir = Path(ReportLocation.parse(run_directory(f"{tmp_path}/", DAG_ID, RUN_ID)).display)
    run_dir.mkdir(parents=True)
    loaded = report_file_name("virtual", START, END, "11111111-1111-4111-8111-111111111111")
    superseded = report_file_name("virtual", START, END, "22222222-2222-4222-8222-222222222222")
    retail = report_file_name("retail", START, END, "33333333-3333-4333-8333-333333333333")
    for name in (loaded, superseded, retail, f".{superseded}.{'a' * 32}.part", "stray.tmp"):
        (run_dir / name).write_bytes(b"visitId\n")
    done = clean_up_run([(run_dir / loaded).as_uri()], DAG_ID, RUN_ID)
    assert (done.failed, done.kept) == ([], [str(run_dir / retail)])
    assert [p.name for p in run_dir.iterdir()] == [retail]
    assert clean_up_run([(run_dir / retail).as_uri()], DAG_ID, RUN_ID).failed == []
    assert not run_dir.exists() and (tmp_path / DAG_ID).is_dir()
