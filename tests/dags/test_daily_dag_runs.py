"""The daily DAG end to end with ``airflow dags test``: sandbox over loopback, real PostgreSQL, real Airflow.

Each run is a separate ``airflow dags test`` process, as an on-call engineer would run it; the warehouse is
checked against what the sandbox's generator says each visit's newest state is.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from dexcare.sandbox import iter_report_csv
from psycopg import sql

from tests.dags.conftest import SEED, VISITS_PER_DAY
from tests.support.airflow_cli import lines_showing
from tests.support.helpers import SANDBOX_TOKEN
from tests.support.warehouse import audit_rows


def table(admin, schema: str, name: str) -> dict[str, dict]:
    from psycopg.rows import dict_row

    if admin.execute("SELECT to_regclass(%s)", (f"{schema}.{name}",)).fetchone()[0] is None:
        return {}
    with admin.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        rows = cur.fetchall()
    by_id = {r["visit_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a visit is in the table twice"
    return by_id


def newest_states(report_type: str, *windows: tuple[dt.date, dt.date]) -> dict[str, dict[str, str]]:
    """What the warehouse must hold: per visit, its last row in the newest window that covers it."""
    state: dict[str, dict[str, str]] = {}
    for start, end in windows:  # oldest window first, so newer windows overwrite
        body = b"".join(iter_report_csv(report_type, start, end, seed=SEED, visits_per_day=VISITS_PER_DAY))
        reader = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
        header = next(reader)
        for row in reader:
            state[row[0]] = dict(zip(header, row, strict=True))
    return state


def window(end: str, days: int = 10) -> tuple[dt.date, dt.date]:
    end_date = dt.date.fromisoformat(end)
    return end_date - dt.timedelta(days=days), end_date


def assert_matches(rows: dict[str, dict], expected: dict[str, dict[str, str]], status_column: str, status_header: str):
    assert set(rows) == set(expected)
    assert all(rows[v][status_column] == expected[v][status_header] for v in expected)


def test_two_overlapping_days_then_a_rerun(runner, admin, warehouse, sandbox):
    first = runner.run("2026-11-20")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    virtual_1 = table(admin, warehouse, "avr_virtual")
    assert len(virtual_1) == 11 * VISITS_PER_DAY
    assert_matches(virtual_1, newest_states("virtual", window("2026-11-20")), "visit_status", "visitStatus")
    first_log = first.stdout + first.stderr
    # every task ends its log with a summary line: ids, waits, bytes and rows, loaded counts
    assert "Summary: DexCare virtual report" in first_log and "SUCCEEDED after waiting" in first_log
    assert "rows," in first_log and "bytes, sha256" in first_log
    assert f"Loaded {runner.schema}.avr_virtual: 1 report(s)" in first_log
    assert not list(Path(runner.storage).rglob("*.csv")), "downloads must be deleted after the load"
    (dag_directory,) = Path(runner.storage).iterdir()
    assert list(dag_directory.iterdir()) == [], "the run's emptied directory must be removed too"

    second = runner.run("2026-11-21")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    virtual_2 = table(admin, warehouse, "avr_virtual")
    retail_2 = table(admin, warehouse, "avr_retail")
    assert len(virtual_2) == len(retail_2) == 12 * VISITS_PER_DAY  # one new day, no duplicates
    expected = newest_states("virtual", window("2026-11-20"), window("2026-11-21"))
    assert_matches(virtual_2, expected, "visit_status", "visitStatus")
    changed = [v for v in virtual_1 if virtual_1[v]["visit_status"] != virtual_2[v]["visit_status"]]
    assert changed, "the overlapping day changed no visit status: the test data would prove nothing"

    log = audit_rows(admin, warehouse)
    assert len(log) == 4 and sorted(r[0] for r in log[:2]) == sorted(r[0] for r in log[2:]) == ["retail", "virtual"]
    day2 = next(r for r in log[2:] if r[0] == "virtual")
    _, rows_in_file, dups, inserted, updated, unchanged = day2
    assert inserted == VISITS_PER_DAY and updated > 0 and inserted + updated + unchanged == rows_in_file - dups

    rerun = runner.run("2026-11-21")
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
    assert table(admin, warehouse, "avr_virtual") == virtual_2
    assert table(admin, warehouse, "avr_retail") == retail_2
    for report_type, rows_in_file, dups, inserted, updated, unchanged in audit_rows(admin, warehouse)[4:]:
        assert (inserted, updated, unchanged) == (0, 0, rows_in_file - dups), report_type
    assert lines_showing(first.stdout + first.stderr + second.stdout + rerun.stdout, SANDBOX_TOKEN) == []


def test_a_failed_report_type_loads_nothing(runner, admin, warehouse, sandbox):
    sandbox.inject("fail", report_type="retail", count=5)
    run = runner.run("2026-11-20", max_resubmits=0)
    assert run.returncode != 0
    assert "FAILED" in run.stdout + run.stderr
    assert table(admin, warehouse, "avr_virtual") == {}
    assert audit_rows(admin, warehouse) == []


def test_a_lost_report_is_recovered_by_resubmission(runner, admin, warehouse, sandbox):
    sandbox.inject("cancel", report_type="virtual", count=1)
    run = runner.run("2026-11-20", max_resubmits=1, report_types=["virtual"])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    posts = [r for r in sandbox.request_log if r[0] == "POST"]
    assert len(posts) == 2
    assert len(table(admin, warehouse, "avr_virtual")) == 11 * VISITS_PER_DAY
    assert table(admin, warehouse, "avr_retail") == {}


def test_a_manual_window_override(runner, admin, warehouse, sandbox):
    # history=None is what the trigger form sends when its history picker is left empty
    run = runner.run("2026-11-20", start_date="2026-10-01", end_date="2026-10-02", report_types=["retail"],
                     history=None)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = next(iter(sandbox.reports.values()))
    assert (str(report.start_date), str(report.end_date)) == ("2026-10-01", "2026-10-02")
    assert len(table(admin, warehouse, "avr_retail")) == 2 * VISITS_PER_DAY


def distinct_states(report_type: str, days: list[str]) -> dict[str, list[tuple[str, dict[str, str | None]]]]:
    """Per visit, each state it had in the reports of ``days`` (in order), repeats of a state dropped: what its
    history must hold, with the day whose report first brought each state. States are the row's values by
    normalised column name (an empty field is NULL in the warehouse)."""
    from dexcare.load.identifiers import normalize_headers

    states: dict[str, list[tuple[str, dict[str, str | None]]]] = {}
    for end in days:
        for visit, row in newest_states(report_type, window(end)).items():
            state = {c: v or None for c, v in zip(normalize_headers(list(row), source="t"), row.values(), strict=True)}
            seen = states.setdefault(visit, [])
            if not seen or seen[-1][1] != state:
                seen.append((end, state))
    return states


def history_rows(admin, schema: str, table: str) -> list[dict]:
    from psycopg.rows import dict_row

    with admin.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY _dexcare_history_id").format(sql.Identifier(schema, table)))
        return cur.fetchall()


def test_three_days_keep_each_visits_history_and_reruns_add_none(runner, admin, warehouse, sandbox):
    days = ["2026-11-20", "2026-11-21", "2026-11-22"]
    for day in days:
        run = runner.run(day, report_types=["virtual"], history=["virtual"])
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "row(s) appended to" in run.stdout + run.stderr
    rows = history_rows(admin, warehouse, "avr_virtual_history")
    expected = distinct_states("virtual", days)
    got: dict[str, list[tuple[str, dict]]] = {}
    for row in rows:  # in the order they were appended
        state = {c: row[c] for c in expected[row["visit_id"]][0][1]}
        got.setdefault(row["visit_id"], []).append((row["_dexcare_window_end"].isoformat(), state))
    assert got == expected  # exactly one row per (visit, distinct state), in order, from the day that brought it
    assert sum(len(v) for v in expected.values()) > len(expected), "no visit changed: the test would prove nothing"
    changes = [row["_dexcare_change"] for row in rows]
    assert changes.count("insert") == len(expected) and set(changes) == {"insert", "update"}
    assert len(table(admin, warehouse, "avr_virtual")) == len(expected)

    for day in ("2026-11-22", "2026-11-20"):  # a re-run of the last day, then an old window
        again = runner.run(day, report_types=["virtual"], history=["virtual"])
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        assert history_rows(admin, warehouse, "avr_virtual_history") == rows
    assert table(admin, warehouse, "avr_retail") == {}


def test_a_failed_run_pages_once_by_smtp(runner, admin, warehouse, sandbox):
    """The failing task pages through the notifier the environment names (the SMTP provider's, to a real SMTP
    server on loopback); load_reports, which never ran, does not page again. Nothing of a report is in it."""
    import json

    from tests.support.smtp_server import LoopbackSMTP

    sandbox.inject("fail", report_type="retail", count=5)
    with LoopbackSMTP() as smtp:
        env = {
            "DEXCARE_FAILURE_NOTIFIER": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
            "DEXCARE_FAILURE_NOTIFIER_KWARGS": json.dumps(
                {"to": "oncall@example.com", "from_email": "airflow@example.com", "smtp_conn_id": "page_smtp"}),
            "AIRFLOW_CONN_PAGE_SMTP": smtp.connection_uri(),
        }
        run = runner.run("2026-11-20", env=env, max_resubmits=0, report_types=["retail"])
    assert run.returncode != 0
    (message,) = smtp.messages
    body = message.get_body(("html",)).get_content()
    assert message["Subject"].startswith("[DexCare] Task fetch.wait_for_report failed: retail, 2026-11-20")
    assert "/failure)" in message["Subject"] and "Report type</th><td>retail" in body
    assert "clear `start_report` of that type" in body  # the runbook's fix for a report DexCare lost
    assert SANDBOX_TOKEN not in f"{message}\n{body}"
    rows = b"".join(iter_report_csv("retail", dt.date(2026, 11, 10), dt.date(2026, 11, 20), seed=SEED,
                                     visits_per_day=VISITS_PER_DAY)).decode().splitlines()[1:]
    fields = {f for row in rows for f in next(csv.reader([row])) if len(f) > 6}
    assert fields and not [f for f in fields if f in body]
