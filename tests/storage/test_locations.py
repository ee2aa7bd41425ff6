"""Report locations: one meaning for a path or URI in the download, the load and the clean-up.

No server is needed here: local files are real files in a temporary directory, and object-store URIs are only
parsed and named (their I/O is in test_object_store.py, against a real S3-compatible server).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from dexcare.exceptions import DexCareReportFileMissingError, DexCareStorageError
from dexcare.storage import (
    ReportLocation,
    check_storage_reaches_every_worker,
    clean_up_run,
    configured_storage,
    executor_names,
    file_location,
    run_directory,
    runs_on_several_machines,
    storage_choice,
)

ODD_NAMES = ["with space", "naïve ünïcode", "per%20cent", "plus+and#hash"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_local_uri_round_trips_to_the_same_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name / f"{name}.csv"
    location = ReportLocation.parse(path)
    assert location.uri == path.as_uri()  # percent-encoded, as Path.as_uri() and browsers write it
    assert " " not in location.uri
    for given in (location.uri, str(path), path):
        again = ReportLocation.parse(given)
        assert again == location and again.display == str(path), given


def test_a_percent_encoded_file_uri_is_decoded_and_a_bare_path_is_literal(tmp_path: Path) -> None:
    assert ReportLocation.parse(f"file://{tmp_path}/my%20reports/").display == f"{tmp_path}/my reports"
    assert ReportLocation.parse(f"{tmp_path}/my%20reports").display == f"{tmp_path}/my%20reports"
    assert ReportLocation.parse(f"file://localhost{tmp_path}/x.csv").display == f"{tmp_path}/x.csv"
    assert ReportLocation.parse("file:///tmp/na%C3%AFve.csv").display == "/tmp/naïve.csv"


def test_bad_file_uris_say_how_to_write_them() -> None:
    with pytest.raises(DexCareStorageError, match="three slashes"):
        ReportLocation.parse("file://fileserver/share/dexcare/")
    with pytest.raises(DexCareStorageError, match="empty report location"):
        ReportLocation.parse("  ")


def test_object_store_uris_keep_the_connection_id_and_the_key_as_written() -> None:
    location = ReportLocation.parse("s3://parse_only@bucket/dexcare/naïve dir/a%20b.csv")
    assert not location.is_local
    assert location.uri == "s3://parse_only@bucket/dexcare/naïve dir/a%20b.csv"
    assert ReportLocation.parse(location.uri) == location
    assert location.name == "a%20b.csv"
    child = ReportLocation.parse("s3://parse_only@bucket/dexcare/").child("run 1").child("f.csv")
    assert child.uri == "s3://parse_only@bucket/dexcare/run 1/f.csv"
    assert ReportLocation.parse("s3://bucket/x/").child("f.csv").uri == "s3://bucket/x/f.csv"


def test_a_destination_ending_in_slash_is_a_directory(tmp_path: Path) -> None:
    assert file_location(f"{tmp_path}/out/", "r.csv").display == f"{tmp_path}/out/r.csv"
    assert file_location(f"{tmp_path}/exact.csv", "r.csv").display == f"{tmp_path}/exact.csv"
    assert file_location("s3://c@b/p/", "r.csv").uri == "s3://c@b/p/r.csv"
    assert file_location("s3://c@b/p/exact.csv", "r.csv").uri == "s3://c@b/p/exact.csv"


def test_run_directory_per_run_under_the_param_the_setting_or_the_private_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__DEXCARE__REPORT_STORAGE", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    run = "scheduled__2026-11-20T00:00:00+00:00"
    safe_run = "scheduled__2026-11-20T00_00_00_00_00"
    assert configured_storage() == ""
    assert storage_choice(None) == (str(tmp_path / "home" / "dexcare-reports"), storage_choice(None)[1])
    assert "not set" in storage_choice(None)[1]
    assert run_directory(None, "dag", run) == (tmp_path / "home" / "dexcare-reports" / "dag" / safe_run).as_uri() + "/"
    assert not (tmp_path / "home").exists(), "naming a directory must not create it"

    monkeypatch.setenv("AIRFLOW__DEXCARE__REPORT_STORAGE", "s3://aws_default@bucket/dexcare/")
    assert configured_storage() == "s3://aws_default@bucket/dexcare/"
    assert storage_choice(None) == ("s3://aws_default@bucket/dexcare/", "[dexcare] report_storage")
    assert run_directory(None, "dag", run) == f"s3://aws_default@bucket/dexcare/dag/{safe_run}/"
    assert storage_choice("file:///mnt/shared/") == ("file:///mnt/shared/", "the run's storage param")
    assert run_directory("file:///mnt/my%20share/", "dag", run) == f"file:///mnt/my%20share/dag/{safe_run}/"


@pytest.mark.parametrize(
    ("setting", "names", "several"),
    [
        ("LocalExecutor", ["LocalExecutor"], False),
        ("airflow.executors.local_executor.LocalExecutor", ["LocalExecutor"], False),
        ("CeleryExecutor", ["CeleryExecutor"], True),
        ("LocalExecutor,CeleryExecutor", ["LocalExecutor", "CeleryExecutor"], True),
        ("KubernetesExecutor", ["KubernetesExecutor"], True),
        ("CeleryKubernetesExecutor", ["CeleryKubernetesExecutor"], True),
        ("airflow.providers.edge3.executors.EdgeExecutor", ["EdgeExecutor"], True),
        ("my_alias:my_company.executors.FancyExecutor", ["FancyExecutor"], True),
        (" LocalExecutor , SequentialExecutor ", ["LocalExecutor", "SequentialExecutor"], False),
    ],
)
def test_which_executors_run_tasks_on_several_machines(setting: str, names: list[str], several: bool) -> None:
    assert executor_names(setting) == names
    assert runs_on_several_machines(setting) is several


def test_worker_local_storage_is_refused_on_a_multi_machine_executor() -> None:
    with pytest.raises(DexCareStorageError) as refused:
        check_storage_reaches_every_worker("/opt/airflow/dexcare-reports", "the default", "CeleryExecutor")
    message = str(refused.value)
    for needed in ("[dexcare] report_storage", "AIRFLOW__DEXCARE__REPORT_STORAGE", "s3://", "CeleryExecutor",
                   "different workers", "No report was requested"):
        assert needed in message, needed
    # Shared by declaration or by nature, or a single machine: accepted.
    check_storage_reaches_every_worker("file:///mnt/shared/dexcare/", "param", "CeleryExecutor")
    check_storage_reaches_every_worker("s3://aws_default@bucket/dexcare/", "param", "KubernetesExecutor")
    check_storage_reaches_every_worker("/opt/airflow/dexcare-reports", "the default", "LocalExecutor")


def test_local_write_is_private_and_appears_only_when_complete(tmp_path: Path) -> None:
    location = ReportLocation.parse(tmp_path / "a dir" / "ünï" / "report.csv")
    with location.write() as out:
        out.write(b"visitId\nv1\n")
        assert not location.exists()
        partial = [p for p in (tmp_path / "a dir" / "ünï").iterdir()]
        assert len(partial) == 1 and partial[0].name.startswith(".report.csv.")
        assert stat.S_IMODE(partial[0].stat().st_mode) == 0o600
    assert location.exists()
    assert stat.S_IMODE(os.stat(location.display).st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a dir").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a dir" / "ünï").stat().st_mode) == 0o700
    with location.open() as stream:
        assert stream.read() == b"visitId\nv1\n"


def test_a_failed_local_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    location = ReportLocation.parse(tmp_path / "report.csv")
    with location.write() as out:
        out.write(b"yesterday")
    with pytest.raises(RuntimeError), location.write() as out:
        out.write(b"half of tod")
        raise RuntimeError("connection lost")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]
    assert Path(location.display).read_bytes() == b"yesterday"


def test_the_clean_up_deletes_what_the_download_named_even_with_a_space(tmp_path: Path) -> None:
    """The old bug: the URI was percent-encoded, the clean-up did not decode it, and the file stayed."""
    location = ReportLocation.parse(tmp_path / "my reports" / "r.csv")
    with location.write() as out:
        out.write(b"visitId\n")
    uri = location.uri
    assert "%20" in uri
    assert ReportLocation.parse(uri).delete() is True
    assert list((tmp_path / "my reports").iterdir()) == []
    assert ReportLocation.parse(uri).delete() is False  # already gone: said so, not claimed


def test_only_this_runs_own_directory_is_emptied_and_removed(tmp_path: Path) -> None:
    run_id = "manual__2026-11-30T10:00:00+00:00"
    run_dir = ReportLocation.parse(run_directory(f"{tmp_path}/", "my dag", run_id))
    first, second = run_dir.child("virtual.csv"), run_dir.child("retail.csv")
    for location in (first, second):
        with location.write() as out:
            out.write(b"visitId\n")
    # Named for another run, it is not this run's own directory: only the loaded file goes.
    assert clean_up_run([first.uri], "other dag", run_id).deleted == [first.display]
    assert clean_up_run([first.uri], "my dag", "manual__2026-11-30T10:00:01+00:00").already_gone == [first.display]
    assert second.exists()
    done = clean_up_run([first.uri], "my dag", run_id)
    assert (done.already_gone, done.leftovers, done.failed) == ([first.display], [second.display], [])
    assert [p.name for p in tmp_path.iterdir()] == ["my_dag"] and list((tmp_path / "my_dag").iterdir()) == []
    chosen = ReportLocation.parse(tmp_path / "chosen" / "r.csv")  # a user's own destination stays, whatever run
    with chosen.write() as out:
        out.write(b"visitId\n")
    assert clean_up_run([chosen.uri], "my dag", "chosen").deleted == [chosen.display]
    assert (tmp_path / "chosen").is_dir()
    assert ReportLocation.parse("s3://aws_default@bucket/d/r/f.csv").parent.is_run_directory("d", "r")


def test_a_missing_local_file_names_the_cause_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DexCareReportFileMissingError) as missing:
        ReportLocation.parse((tmp_path / "gone.csv").as_uri()).open()
    message = str(missing.value)
    assert (tmp_path / "gone.csv").as_uri() in message
    assert "another machine" in message and "Fix:" in message and "[dexcare] report_storage" in message
    assert "\n" not in message  # one line: the last line of the task log


SECRET = "wJalrXUtnFEMI-K7MDENG-SECRET-5e3f"
#: value -> what the refusal says; each one was accepted before (or failed with a bare ValueError).
REFUSED = {
    "s3x://aws_default@bucket/dexcare/": "no storage protocol that fsspec knows",
    "nosuchproto://bucket/dexcare/": "no storage protocol that fsspec knows",
    "s3://": "names no bucket",
    "s3://aws_default@/": "names no bucket",
    "http://files.example.com/dexcare/": "no filesystem is available here",
    "gs://bucket/dexcare/": "no filesystem is available here",  # no Google provider in this environment
    "ftp//nowhere::bucket": "nor an absolute path",
    "reports/dexcare/": "nor an absolute path",
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/": "carries credentials before '@'",
    f"s3://:{SECRET}@bucket/": "carries credentials before '@'",
    f"file://user:{SECRET}@fileserver/share/": "three slashes",
    f"AKIAEXAMPLE:{SECRET}@bucket/dexcare/": "nor an absolute path",  # the scheme forgotten
}


@pytest.mark.parametrize(("value", "says"), REFUSED.items(), ids=list(REFUSED))
def test_a_storage_value_that_cannot_work_is_refused_naming_its_setting_and_a_valid_form(value: str, says: str) -> None:
    from dexcare.storage import check_storage

    for refuse in (lambda: check_storage(value, "[dexcare] report_storage"), lambda: ReportLocation.parse(value)):
        with pytest.raises(DexCareStorageError) as refused:
            refuse()
        message = str(refused.value)
        assert says in message
        assert "s3://aws_default@my-bucket/dexcare/" in message and "[dexcare] report_storage" in message
        assert SECRET not in message and refused.value.__cause__ is None


def test_the_protocols_that_work_come_from_what_is_installed(monkeypatch) -> None:
    """s3 has the Amazon provider and s3fs here; gs has neither. A store attached in the process counts too."""
    import fsspec
    from airflow.sdk.io import attach, store

    # Airflow keeps attached stores for the life of the process: another test may have attached memory:// already.
    monkeypatch.setattr(store, "_STORE_CACHE", {})
    from dexcare.storage import check_storage
    from fsspec.registry import known_implementations

    assert fsspec.get_filesystem_class("s3") and "gs" in known_implementations
    assert check_storage("s3://aws_default@bucket/dexcare/", "param").uri == "s3://aws_default@bucket/dexcare"
    with pytest.raises(DexCareStorageError, match="'memory'"):
        check_storage("memory://attached-bucket/x/", "param")
    attach(protocol="memory", fs=fsspec.filesystem("memory"))
    assert not check_storage("memory://attached-bucket/x/", "param").is_local


def test_an_object_storage_path_with_credentials_is_refused_too() -> None:
    from airflow.sdk import ObjectStoragePath

    with pytest.raises(DexCareStorageError, match="carries credentials") as refused:
        ReportLocation.parse(ObjectStoragePath(f"s3://AKIAEXAMPLE:{SECRET}@bucket/x.csv"))
    assert SECRET not in str(refused.value)


def test_valid_storage_values_are_kept_as_written(tmp_path: Path) -> None:
    from dexcare.storage import check_storage

    assert check_storage("s3://dexcare_s3@bucket/prefix/", "param").uri == "s3://dexcare_s3@bucket/prefix"
    assert check_storage((tmp_path / "my share").as_uri() + "/", "param").display == str(tmp_path / "my share")
    assert check_storage(f"{tmp_path}/absolute/", "param").display == f"{tmp_path}/absolute"
    assert check_storage("~/dexcare", "param").display == str(Path("~/dexcare").expanduser())


def test_a_download_to_a_refused_destination_writes_nothing_and_quotes_no_secret(
    dexcare_conn_id: str, sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    """An operator's explicit destination goes through the same parse as plan's storage."""
    import time

    from dexcare.operators.download_report import DexCareDownloadReportOperator
    from dexcare.operators.start_report import DexCareStartReportOperator

    from tests.support.helpers import logged
    from tests.support.task_runtime import Runtime

    monkeypatch.chdir(tmp_path)
    rt = Runtime()
    report_id = rt.run(
        DexCareStartReportOperator(
            task_id="start", report_type="virtual", report_start_date="2026-11-01", report_end_date="2026-11-02"
        )
    )
    time.sleep(0.6)
    for destination in (f"s3://AKIAEXAMPLE:{SECRET}@bucket/", "relative/reports/"):
        op = DexCareDownloadReportOperator(
            task_id="download", report_id=report_id, destination=destination, request_task_id="start"
        )
        with pytest.raises(DexCareStorageError) as refused:
            op.execute(rt.context("download"))
        assert SECRET not in str(refused.value)
    assert list(tmp_path.iterdir()) == []
    assert SECRET not in logged(caplog, capfd)
