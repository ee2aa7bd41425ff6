"""The pure parts of scripts/compose_smoke.py (`make compose-smoke`, which needs a Docker engine and is not part
of `make test`): its arguments, the counts it expects (checked against the real sandbox over loopback), the
warehouse comparison, the log scan and how it reads `compose ps`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scripts import compose_smoke as smoke
from tests.support.sandbox_api import Api


def test_arguments_split_the_compose_command_like_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE", raising=False)
    args = smoke.parse_args([])
    assert args.compose == ["docker", "compose"]
    assert args.project.startswith("dexcare-smoke-") and args.project != smoke.parse_args([]).project
    args = smoke.parse_args(["--compose", "'../shared/my dir/offline-engine.sh' compose", "--project", "mine_1"])
    assert args.compose == ["../shared/my dir/offline-engine.sh", "compose"]
    assert args.project == "mine_1"
    monkeypatch.setenv("COMPOSE", "podman compose")
    assert smoke.parse_args([]).compose == ["podman", "compose"]


@pytest.mark.parametrize("argv", [["--compose", ""], ["--project", "Has Spaces"], ["--project", "-x"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        smoke.parse_args(argv)
    assert exit_.value.code == 2
    assert "compose" in capsys.readouterr().err


def _fetch_report(url: str, report_type: str, start: dt.date, end: dt.date) -> list[list[str]]:
    """The report's CSV rows (header first), fetched from the sandbox over raw HTTP the way DexCare clients do."""
    api = Api(url)
    with api.session:
        report_id = api.start_id({"type": report_type, "startDate": start.isoformat(), "endDate": end.isoformat()})
        api.wait_succeeded(report_id)
        data = api.data(report_id)
    assert data.status_code == 200, data.text
    return list(csv.reader(io.StringIO(data.text)))


def test_expected_counts_are_what_the_sandbox_serves(sandbox: Any) -> None:
    """The smoke derives its expected counts from the generator; the sandbox service must serve exactly those
    rows: here the real sandbox over loopback, with its own seed and visits per day."""
    end = dt.date(2026, 11, 30)
    start = end - dt.timedelta(days=smoke.WINDOW_DAYS - 1)
    from dexcare.report import ReportType

    report_types = [t.value for t in ReportType]
    expected = smoke.expected_loads(report_types, start, end, seed=sandbox.seed, visits_per_day=sandbox.visits_per_day)
    assert sorted(expected) == sorted(report_types) == ["provider_booking", "retail", "virtual"]
    for report_type, want in expected.items():
        _header, *rows = _fetch_report(sandbox.url, report_type, start, end)
        assert want.rows_in_file == len(rows)
        assert want.distinct_visits == len({row[0] for row in rows}) == smoke.WINDOW_DAYS * sandbox.visits_per_day
        assert want.table == f"avr_{report_type}"
    # Repeats exist over a window this size, so the duplicates check is not trivially zero everywhere.
    assert sum(want.duplicates_in_file for want in expected.values()) > 0


def test_sandbox_settings_come_from_the_compose_command(compose: dict[str, Any]) -> None:
    settings = smoke.sandbox_settings(compose["services"][smoke.SANDBOX_SERVICE]["command"])
    assert (settings.seed, settings.visits_per_day) == (0, 100)  # the sandbox's defaults: the file sets neither
    custom = smoke.sandbox_settings(["python", "-m", "dexcare.sandbox", "--seed", "7", "--visits-per-day", "5"])
    assert (custom.seed, custom.visits_per_day) == (7, 5)
    with pytest.raises(smoke.SmokeFailure, match="does not run"):
        smoke.sandbox_settings(["python", "-m", "http.server"])


def _audit_for(expected: dict[str, smoke.Expected]) -> list[dict[str, Any]]:
    return [want.audit_row() for want in expected.values()]


def test_check_loads_accepts_exactly_the_expected_warehouse() -> None:
    expected = {"virtual": smoke.Expected("virtual", "avr_virtual", 305, 300)}
    assert smoke.check_loads(expected, _audit_for(expected), {"avr_virtual": 300}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda audit, counts: counts.update(avr_virtual=299), "avr_virtual: 299 rows"),
        (lambda audit, counts: audit[0].update(inserted=290, updated=10), "load_audit"),
        (lambda audit, counts: audit[0].update(duplicates_in_file=0), "load_audit"),
        (lambda audit, counts: audit.append(dict(audit[0])), "2 load_audit rows"),
        (lambda audit, counts: audit.clear(), "report types []"),
        (lambda audit, counts: audit[0].update(report_type="retail"), "report types ['retail']"),
    ],
)
def test_check_loads_names_each_difference(change: Any, message: str) -> None:
    expected = {"virtual": smoke.Expected("virtual", "avr_virtual", 305, 300)}
    audit, counts = _audit_for(expected), {"avr_virtual": 300}
    change(audit, counts)
    problems = smoke.check_loads(expected, audit, counts)
    assert any(message in problem for problem in problems), problems


def test_find_secret_names_the_sources_that_hold_it() -> None:
    key = "dc-key-0123456789"
    sources = {"container logs": "a\nb", "logs/x/attempt=1.log": f"Authorization: dc-token {key}", "y": "dc-key"}
    assert smoke.find_secret(key, sources) == ["logs/x/attempt=1.log"]
    assert smoke.find_secret(key, {"container logs": "clean"}) == []
    with pytest.raises(ValueError, match="shorter than 8"):
        smoke.find_secret("abc", sources)


def test_split_task_logs_reads_what_tail_prints(tmp_path: Path) -> None:
    """The smoke dumps the task logs with `tail -n +1` over many files; each file comes back whole."""
    files = {"a/attempt=1.log": '{"event": "one"}\n{"event": "two"}\n', "b/attempt=1.log.trigger.2.log": "x\n\ny\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    dump = subprocess.run(
        ["sh", "-c", "find . -type f -exec tail -n +1 {} +"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    logs = smoke.split_task_logs(dump)
    assert {name.removeprefix("./"): text.strip("\n") for name, text in logs.items()} == {
        name: text.strip("\n") for name, text in files.items()
    }


def test_parse_ps_reads_both_compose_formats() -> None:
    rows = [{"Service": "postgres", "State": "running", "Health": "healthy", "ExitCode": 0}]
    assert smoke.parse_ps(json.dumps(rows)) == rows  # Compose before 2.21: one array
    assert smoke.parse_ps("\n".join(json.dumps(r) for r in rows * 2) + "\n") == rows * 2  # 2.21+: one per line
    assert smoke.parse_ps("  \n") == []


def _ps(config: dict[str, Any], **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """`compose ps` rows for a stack that is all up: healthy where there is a healthcheck, init exited 0."""
    rows = []
    for name, service in config["services"].items():
        row = {"Service": name, "State": "running", "Health": "healthy" if "healthcheck" in service else "",
               "ExitCode": 0}
        if name == "airflow-init":
            row.update(State="exited", Health="")
        row.update(overrides.get(name, {}))
        rows.append(row)
    return rows


def test_service_readiness_on_the_real_compose_file(compose: dict[str, Any]) -> None:
    assert smoke.service_readiness(compose, _ps(compose)) == ([], [])
    waiting, failed = smoke.service_readiness(
        compose,
        _ps(compose, **{"airflow-triggerer": {"Health": "starting"}, "airflow-init": {"State": "running"}}),
    )
    assert (waiting, failed) == (["airflow-init", "airflow-triggerer"], [])
    waiting, failed = smoke.service_readiness(
        compose,
        _ps(compose, **{"airflow-init": {"ExitCode": 1}, "airflow-scheduler": {"Health": "unhealthy"}}),
    )
    assert [entry.split()[0] for entry in failed] == ["airflow-init", "airflow-scheduler"]
    rows = [row for row in _ps(compose) if row["Service"] != "postgres"]
    assert smoke.service_readiness(compose, rows) == (["postgres"], [])


def test_forbidden_files_in_a_context() -> None:
    assert smoke.forbidden_in_context(["README.md", ".env", ".git/HEAD", ".envrc", "docs/.env", ".github/x"]) == [
        ".env",
        ".git/HEAD",
    ]


def test_timings_report_every_phase_also_a_failed_one() -> None:
    timings = smoke.Timings()
    with timings.phase("first"):
        pass
    with pytest.raises(smoke.SmokeFailure), timings.phase("second"):
        raise smoke.SmokeFailure("boom")
    report = timings.report()
    assert "first" in report and "ok" in report
    assert "second" in report and "failed" in report and "total" in report
