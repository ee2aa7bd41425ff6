"""The DexCare page on a real api-server, seen in headless Chromium, and who it refuses.

A stack (api-server, scheduler, dag-processor, triggerer) runs the daily DAG a few days back: two days load (a
backfill), one fails beside them (it fetches only retail, with a key column the report does not have), and
today's run is left waiting on reports DexCare keeps RUNNING. An old provider-booking load and five earlier loads
of the virtual report with many more rows are in ``load_audit`` first, so the volume guard warns on the days
that load. Chromium then opens ``/dexcare/`` with the session cookie a login leaves and the test reads what is
rendered: each cell's words, the freshness line and the waiting reports. The screenshot is kept in
test-artifacts/ (and copied to docs/dexcare-page.png for the README when DEXCARE_UPDATE_DOCS=1).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from dexcare.sandbox import SandboxServer
from psycopg import sql

from tests.e2e.browser import Chromium
from tests.e2e.stack import DAG_ID, REPO, AirflowStack, deployment_env, running, trigger_run
from tests.support.processes import wait_for
from tests.support.warehouse import scratch_schema

TIMINGS: dict[str, float] = {}
USERS = {"admin": "admin", "reader": "viewer", "outsider": ""}
PASSWORDS = {"admin": "admin", "reader": "reader-pw-7f3a", "outsider": "outsider-pw-7f3a"}
ARTIFACTS = REPO / "test-artifacts"
SEEDED_ROWS = 400


@pytest.fixture(scope="module")
def page_schema(pg_uri: str) -> Iterator[str]:
    with scratch_schema(pg_uri, "dexcare_page") as name:
        yield name


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, pg_uri: str, metadata_db: str,
          page_schema: str) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("page-home")
    env = deployment_env(
        metadata_db, sandbox.url, pg_uri,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in USERS.items()),
        AIRFLOW__DEXCARE__PAGE_SCHEMA=page_schema,
    )
    booted = AirflowStack(home, env)
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    with running(booted, TIMINGS, "DexCare page e2e"):
        yield booted


def token(stack: AirflowStack, user: str) -> str:
    response = httpx.post(f"{stack.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def days_ago(n: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=n)


def conf(schema: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"schema": schema, "poll_interval": 1, "lookback_days": 1, "failed_grace_minutes": 0.05,
            "storage": f"{tmp}/csv/", "report_types": ["virtual", "retail"], **extra}


def run_day(stack: AirflowStack, day: dt.date, run_conf: dict[str, Any], want: str) -> str:
    """A run whose window ends on ``day`` (its logical date is that midnight), to its end."""
    watch = trigger_run(stack, f"{day.isoformat()}T00:00:00Z", run_conf)
    final = watch.wait(stack, timeout=150)
    assert final["state"] == want, watch.failure_detail(stack)
    return watch.run_id


def seed_earlier_loads(pg_uri: str, schema: str, tmp: Path) -> None:
    """The warehouse before the runs: an old provider-booking load (which creates load_audit, through the real
    loader), and five earlier one-day-window loads of the virtual report with many rows (the volume guard's
    baseline)."""
    from dexcare.load.loader import LoadOptions, load_reports

    from tests.load.conftest import report

    csv = tmp / "old.csv"
    csv.write_text("visitId,visitStatus\nv-old,done\n")
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(pg_uri) as conn:
        load_reports(conn, [report(csv, "provider_booking", end=days_ago(25), start=days_ago(26))],
                     dialect="postgres", options=LoadOptions(schema=schema), dag_id=DAG_ID, run_id="earlier")
        for n in range(20, 15, -1):
            conn.execute(
                sql.SQL("INSERT INTO {} (dag_id, run_id, report_id, report_type, target_table, file_uri, window_start,"
                        " window_end, rows_in_file, duplicates_in_file, inserted, updated, unchanged, started_at,"
                        " finished_at) VALUES (%s, %s, %s, 'virtual', 'avr_virtual', 'file:///seed.csv', %s, %s, %s,"
                        " 0, %s, 0, 0, %s, %s)").format(sql.Identifier(schema, "load_audit")),
                [DAG_ID, "earlier", f"seed-{n}", days_ago(n + 1), days_ago(n), SEEDED_ROWS, SEEDED_ROWS, now, now],
            )


def backfill_runs(stack: AirflowStack) -> list[dict[str, Any]]:
    stack.assert_running()
    return stack.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill", "limit": 5})["dag_runs"]


@pytest.fixture(scope="module")
def history(stack: AirflowStack, sandbox: SandboxServer, pg_uri: str, page_schema: str,
            tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Days 4 and 3 ago load (a backfill: the DAG's max_active_runs does not hold its runs back), 2 ago fails
    (a run beside it), today waits; returns the run ids by how many days ago."""
    tmp = tmp_path_factory.mktemp("page-runs")
    seed_earlier_loads(pg_uri, page_schema, tmp)
    # Done before the sensor's first check: no deferral, so no scheduler race (RACE_NOTE in test_real_airflow).
    sandbox.queue_seconds, sandbox.run_seconds = 0.05, 0.1
    started = time.monotonic()
    stack.api("POST", "/backfills", json={
        "dag_id": DAG_ID, "from_date": f"{days_ago(4).isoformat()}T00:00:00Z",
        "to_date": f"{days_ago(3).isoformat()}T00:00:00Z", "dag_run_conf": conf(page_schema, tmp),
        "max_active_runs": 2})
    failing = trigger_run(stack, f"{days_ago(2).isoformat()}T00:00:00Z",
                          conf(page_schema, tmp, report_types=["retail"], key_columns={"retail": ["no_such_column"]}))
    assert failing.wait(stack, timeout=150)["state"] == "failed", failing.failure_detail(stack)
    TIMINGS["failing run"] = round(time.monotonic() - started, 1)

    def backfilled() -> list[dict[str, Any]] | None:
        runs = backfill_runs(stack)
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    done = wait_for("the two backfilled days to finish", backfilled, timeout=150, interval=1)
    assert {r["state"] for r in done} == {"success"}, done
    runs = {(dt.datetime.now(dt.UTC).date() - dt.date.fromisoformat(r["logical_date"][:10])).days: r["dag_run_id"]
            for r in done}
    runs[2] = failing.run_id
    TIMINGS["backfill"] = round(time.monotonic() - started, 1)
    sandbox.queue_seconds, sandbox.run_seconds = 0.05, 3600.0
    waiting = trigger_run(stack, f"{days_ago(0).isoformat()}T00:00:00Z", conf(page_schema, tmp))
    runs[0] = waiting.run_id

    def deferred() -> bool:
        states = [ti["state"] for ti in waiting.observe(stack) if ti["task_id"] == "fetch.wait_for_report"]
        return len(states) == 2 and all(s == "deferred" for s in states)

    wait_for("today's two sensors to defer", deferred, timeout=90)
    TIMINGS["runs"] = round(time.monotonic() - started, 1)
    return runs


def state(cell_text: str) -> str:
    """The word after the date ("Fri 4 Dec LOADED ...")."""
    return cell_text.split()[3]


def cells(chromium_page: Any) -> dict[tuple[str, str], str]:
    """Each cell's visible text, by (table, day)."""
    found = chromium_page.evaluate(
        "JSON.stringify([...document.querySelectorAll('.cell[data-day]')]"
        ".map(e => [e.dataset.table, e.dataset.day, e.innerText]))"
    )
    return {(t, d): " ".join(text.split()) for t, d, text in json.loads(found)}


def test_the_page_shows_each_day_and_the_waiting_reports(stack: AirflowStack, history: dict[str, Any],
                                                         page_schema: str) -> None:
    started = time.monotonic()
    with Chromium() as chromium, chromium.page(stack.url, {"_token": token(stack, "reader")}) as page:
        page.goto(f"{stack.url}/dexcare/")
        text = page.text()
        shown = cells(page)
        screenshot = ARTIFACTS / "dexcare-page.png"
        page.screenshot(screenshot)
    TIMINGS["browser"] = round(time.monotonic() - started, 1)
    print(f"\npage text:\n{text}\nscreenshot: {screenshot}")
    if os.environ.get("DEXCARE_UPDATE_DOCS") == "1":
        shutil.copyfile(screenshot, REPO / "docs" / "dexcare-page.png")

    assert f"DexCare loads: {DAG_ID}" in text
    for table in ("avr_virtual", "avr_retail", "avr_provider_booking"):
        assert f"{page_schema}.{table}" in text
    day = {n: days_ago(n).isoformat() for n in range(0, 31)}
    # Two days loaded, in either order (a backfill runs them side by side): five visits a day in two-day windows,
    # so one load inserts ten and the other five, finding the shared day's five unchanged or updated.
    loaded = [shown[("avr_virtual", day[n])] for n in (4, 3)]
    found = [re.search(r"LOADED (\d+) inserted (\d+) updated (\d+) unchanged", text) for text in loaded]
    assert all(found), loaded
    assert sorted(int(m[1]) for m in found if m) == [5, 10], loaded
    assert all(sum(int(m[i]) for i in (1, 2, 3)) in (10, 15) for m in found if m), loaded
    assert state(shown[("avr_retail", day[4])]) == "LOADED"
    # The earlier loads had 400 rows each: the guard warned on both days' 10.
    for cell_text in loaded:
        assert "volume warn: 10 rows (median of recent loads 400)" in cell_text, cell_text
    assert "LOADED 400 inserted" in shown[("avr_virtual", day[18])]
    assert "volume" not in shown[("avr_retail", day[3])]  # no baseline of its own: no verdict to show
    # The day before the first window's end is in that window: covered, not missing.
    assert shown[("avr_virtual", day[5])].split()[3:] == ["COVERED", "in", "window", day[5], "to", day[4], "run"]
    # The failed day: its run fetched only retail, whose download refused the report; virtual was not tried.
    assert shown[("avr_retail", day[2])].split()[3:] == ["FAILED", "at", "fetch.download_report", "run"]
    assert shown[("avr_virtual", day[2])].split()[3:] == ["MISSING"]
    # Today: waiting on DexCare; yesterday: nothing tried it, and today's window is not committed either.
    assert state(shown[("avr_virtual", day[0])]) == "RUNNING"
    assert state(shown[("avr_virtual", day[1])]) == "MISSING"
    assert {state(shown[("avr_provider_booking", day[n])]) for n in range(24)} == {"MISSING"}
    assert state(shown[("avr_provider_booking", day[25])]) == "LOADED"
    assert f"Newest loaded window: {day[4]} to {day[3]} (ends 3 days before today" in text
    # The waiting reports: both report types of today's run, with the status the sensor saw.
    rows = re.findall(r"^(\S+)\t(virtual|retail)\t(.+?)\t(.+?)\t(.+?)\trun · log$", text, re.M)
    assert sorted(r[1] for r in rows) == ["retail", "virtual"], text
    for report_id, _, window, status, _age in rows:
        assert re.fullmatch(r"[0-9a-f-]{36}", report_id) and window == f"{day[1]} to {day[0]}"
        assert status.startswith(("RUNNING", "QUEUED")) and "(sensor deferred)" in status, status


def test_each_cell_links_to_its_run_and_task_log(stack: AirflowStack, history: dict[str, Any]) -> None:
    with Chromium() as chromium, chromium.page(stack.url, {"_token": token(stack, "reader")}) as page:
        page.goto(f"{stack.url}/dexcare/")
        links = json.loads(page.evaluate(
            "JSON.stringify(Object.fromEntries([...document.querySelectorAll('.cell[data-day]')]"
            ".map(e => [e.dataset.table + ' ' + e.dataset.day, [...e.querySelectorAll('a')]"
            ".map(a => a.getAttribute('href'))])))"))
    base = f"/dags/{DAG_ID}/runs/"
    loaded = links[f"avr_virtual {days_ago(4).isoformat()}"]
    run = base + history[4].replace(":", "%3A").replace("+", "%2B")
    assert loaded == [f"{run}/tasks/load_reports", run]
    failed = links[f"avr_retail {days_ago(2).isoformat()}"]
    failed_run = base + history[2].replace(":", "%3A").replace("+", "%2B")
    assert failed[0].startswith(f"{failed_run}/tasks/") and failed[1] == failed_run
    # Airflow's UI answers each link (the page the browser would open is its UI, not a 404 of the api-server).
    for href in (*loaded, *failed):
        assert httpx.get(f"{stack.url}{href}", timeout=30).status_code == 200


def test_anonymous_and_users_who_may_not_read_the_dag_are_refused(stack: AirflowStack) -> None:
    anonymous = httpx.get(f"{stack.url}/dexcare/", timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    outsider = token(stack, "outsider")
    for how in ({"headers": {"Authorization": f"Bearer {outsider}"}}, {"cookies": {"_token": outsider}}):
        refused = httpx.get(f"{stack.url}/dexcare/", timeout=30, **how)
        assert refused.status_code == 403, refused.text
        assert "DexCare loads" not in refused.text
    forged = httpx.get(f"{stack.url}/dexcare/", cookies={"_token": outsider[:-4] + "AAAA"}, timeout=30)
    assert forged.status_code in (401, 403)
    allowed = httpx.get(f"{stack.url}/dexcare/", cookies={"_token": token(stack, "reader")}, timeout=30)
    assert allowed.status_code == 200 and "DexCare loads" in allowed.text


def test_the_navigation_entry_shows_the_page_inside_airflows_ui(stack: AirflowStack, history: dict[str, Any]) -> None:
    """Airflow 3.1+: the plugin's external view is a page of the UI (``/plugin/dexcare``) framing ``/dexcare/``."""
    (plugin,) = [p for p in stack.api("GET", "/plugins")["plugins"] if p["name"] == "dexcare"]
    assert [(v["name"], v["href"], v["url_route"]) for v in plugin["external_views"]] == [
        ("DexCare loads", "dexcare/", "dexcare")]
    with Chromium() as chromium, chromium.page(stack.url, {"_token": token(stack, "reader")}) as page:
        page.goto(f"{stack.url}/plugin/dexcare")
        framed = (
            "(() => { const f = document.querySelector('iframe');"
            " return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; })()"
        )
        text = wait_for("the UI to frame the DexCare page", lambda: page.evaluate(framed) or None, timeout=60)
        nav = page.text()
    assert f"DexCare loads: {DAG_ID}" in text and "Reports waited on now" in text
    assert "Dags" in nav and "Browse" in nav  # the UI's own navigation around the frame (the entry is under Browse)
