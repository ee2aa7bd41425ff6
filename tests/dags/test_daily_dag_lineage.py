"""OpenLineage events of the daily DAG, as apache-airflow-providers-openlineage really emits them.

The provider (the ``openlineage`` extra, installed in the test venv) runs inside ``airflow dags test`` with its
own ``file`` transport: its listener calls the operators' lineage methods and writes every event as a JSON
line, which these tests read back and hold against the warehouse, the audit table and the sandbox's
generator. Nothing is mocked. The last test runs the DAG in a Python environment from which the provider and
the OpenLineage client are absent (the test venv's packages minus those, linked into a fresh venv).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

from airflow.models.connection import Connection
from airflow.providers.openlineage.sqlparser import SQLParser
from airflow.providers.postgres.hooks.postgres import PostgresHook
from dexcare.load.identifiers import normalize_headers
from dexcare.sandbox import iter_report_csv
from dexcare.sandbox.generator import COLUMNS, ReportType
from psycopg import sql

from tests.dags.conftest import DAG_ID, REPO, SEED, VISITS_PER_DAY
from tests.support.airflow_cli import airflow_env, postgres_connection, register_dags
from tests.support.helpers import SANDBOX_TOKEN

REPORT_PATH = "api/8/reporting/allvisitsreport"


def lineage_env(events: Path) -> dict[str, str]:
    events.parent.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "dexcare-test",
    }


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def task_events(events: list[dict], task: str, kind: str) -> list[dict]:
    return [e for e in events if e["eventType"] == kind and e["job"]["name"] == f"{DAG_ID}.{task}"]


def warehouse_naming(pg_uri: str, schema: str) -> tuple[str, str]:
    """Namespace and name prefix the postgres provider's own SQL lineage gives this warehouse connection."""
    conn = Connection.from_json(postgres_connection(pg_uri), conn_id="dexcare_warehouse")
    info = PostgresHook(postgres_conn_id="dexcare_warehouse").get_openlineage_database_info(conn)
    return SQLParser.create_namespace(info), f"{info.database}.{schema}"


def report_csv(report_type: str, end: str) -> bytes:
    end_date = dt.date.fromisoformat(end)
    return b"".join(iter_report_csv(report_type, end_date - dt.timedelta(days=10), end_date, seed=SEED,
                                    visits_per_day=VISITS_PER_DAY))


def audit(admin, schema: str) -> list[dict]:
    from psycopg.rows import dict_row

    with admin.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(schema, "load_audit")))
        return cur.fetchall()


def table_columns(admin, schema: str, table: str) -> list[list[str]]:
    return [list(r) for r in admin.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (sql.Identifier(schema, table).as_string(admin),)).fetchall()]


def fields(dataset: dict) -> list[list]:
    return [[f["name"], f.get("type")] for f in dataset["facets"]["schema"]["fields"]]


def by_name(datasets: list[dict]) -> dict[str, dict]:
    return {d["name"]: d for d in datasets}


def test_a_daily_run_describes_the_reports_it_read_and_the_tables_it_wrote(runner, admin, warehouse, sandbox,
                                                                          tmp_path, pg_uri):
    events_file = tmp_path / "lineage" / "events.jsonl"
    run = runner.run("2026-11-20", env=lineage_env(events_file), history=["virtual"])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    events = read_events(events_file)
    source = sandbox.url.rstrip("/")
    rows = {r["report_type"]: r for r in audit(admin, warehouse)}
    assert set(rows) == {"virtual", "retail"}

    # The downloads: each read one report type, named the same whatever the report id.
    downloads = task_events(events, "fetch.download_report", "COMPLETE")
    assert len(downloads) == 2
    for event in downloads:
        (read,) = event["inputs"]
        report_type = read["name"].rsplit("/", 1)[-1]
        assert (read["namespace"], read["name"]) == (source, f"{REPORT_PATH}/{report_type}")
        assert fields(read) == [[h, None] for h in COLUMNS[ReportType(report_type)]]
        statistics = read["inputFacets"]["inputStatistics"]
        assert statistics["rowCount"] == rows[report_type]["rows_in_file"]
        assert statistics["size"] == len(report_csv(report_type, "2026-11-20"))
        facets = event["run"]["facets"]
        assert facets["externalQuery"]["externalQueryId"] == rows[report_type]["report_id"]
        assert facets["dexcare"]["reports"] == [{"reportId": rows[report_type]["report_id"], "reportType": report_type,
                                                 "windowStart": "2026-11-10", "windowEnd": "2026-11-20"}]
        assert event["outputs"] == []  # the CSV lives for one run: not a dataset

    # The load: both reports in, the tables (and the history kept for virtual) out, nothing else.
    (load,) = task_events(events, "load_reports", "COMPLETE")
    namespace, prefix = warehouse_naming(pg_uri, warehouse)
    assert namespace.startswith("postgres://") and namespace.endswith(":5432")
    assert {(d["namespace"], d["name"]) for d in load["inputs"]} == {(source, f"{REPORT_PATH}/virtual"),
                                                                    (source, f"{REPORT_PATH}/retail")}
    outputs = by_name(load["outputs"])
    assert {d["namespace"] for d in load["outputs"]} == {namespace}
    assert set(outputs) == {f"{prefix}.avr_virtual", f"{prefix}.avr_virtual_history", f"{prefix}.avr_retail"}
    named = [d["name"] for e in events for d in e.get("inputs", []) + e.get("outputs", [])]
    assert not [n for n in named if "stage" in n or "pg_temp" in n or "load_audit" in n]

    for report_type in ("virtual", "retail"):
        table = outputs[f"{prefix}.avr_{report_type}"]
        assert fields(table) == table_columns(admin, warehouse, f"avr_{report_type}")  # the schema after the load
        written = rows[report_type]["inserted"] + rows[report_type]["updated"]
        assert table["outputFacets"]["outputStatistics"]["rowCount"] == written > 0
        headers = COLUMNS[ReportType(report_type)]
        lineage = table["facets"]["columnLineage"]["fields"]
        assert lineage == {
            column: {"inputFields": [{"namespace": source, "name": f"{REPORT_PATH}/{report_type}", "field": header,
                                      "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]}
            for header, column in zip(headers, normalize_headers(headers, source="t"), strict=True)
        }
    history = outputs[f"{prefix}.avr_virtual_history"]
    assert fields(history) == table_columns(admin, warehouse, "avr_virtual_history")
    appended = admin.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(warehouse, "avr_virtual_history"))).fetchone()[0]
    assert history["outputFacets"]["outputStatistics"]["rowCount"] == appended > 0
    assert history["facets"]["columnLineage"] == outputs[f"{prefix}.avr_virtual"]["facets"]["columnLineage"]
    assert sorted(r["reportId"] for r in load["run"]["facets"]["dexcare"]["reports"]) == sorted(
        r["report_id"] for r in rows.values())

    # The next day: the same datasets, new report ids, and the counts of what that load changed.
    second = runner.run("2026-11-21", env=lineage_env(events_file), history=["virtual"], report_types=["virtual"])
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    (load2,) = task_events(read_events(events_file), "load_reports", "COMPLETE")[1:]
    day2 = audit(admin, warehouse)[-1]
    assert day2["updated"] > 0 and day2["inserted"] > 0
    outputs2 = by_name(load2["outputs"])
    assert set(outputs2) == {f"{prefix}.avr_virtual", f"{prefix}.avr_virtual_history"}
    for name in outputs2:
        assert outputs2[name]["outputFacets"]["outputStatistics"]["rowCount"] == day2["inserted"] + day2["updated"]
    (report,) = load2["run"]["facets"]["dexcare"]["reports"]
    assert report["reportId"] == day2["report_id"] != rows["virtual"]["report_id"]

    # Names and counts only: no value of any row, and never the key.
    text = events_file.read_text()
    records = list(csv.DictReader(io.StringIO(report_csv("virtual", "2026-11-20").decode(), newline="")))
    values = {r[c] for r in records for c in ("patientName", "reasonForVisit") if r[c]}
    assert len(values) > 100 and not [v for v in values if v in text]
    assert SANDBOX_TOKEN not in text


def test_a_failed_load_names_what_it_was_about_and_claims_no_write(runner, admin, warehouse, sandbox, tmp_path,
                                                                    pg_uri):
    events_file = tmp_path / "lineage" / "events.jsonl"
    # A key the header has (the download takes it) but some rows leave empty: only the load can fail on it.
    run = runner.run("2026-11-20", env=lineage_env(events_file), report_types=["virtual"],
                     key_columns={"virtual": ["completedAt"]})
    assert run.returncode != 0 and "empty key (completed_at)" in run.stdout + run.stderr
    (failed,) = task_events(read_events(events_file), "load_reports", "FAIL")
    namespace, prefix = warehouse_naming(pg_uri, warehouse)
    (read,) = failed["inputs"]
    assert (read["namespace"], read["name"]) == (sandbox.url.rstrip("/"), f"{REPORT_PATH}/virtual")
    assert fields(read) == [[h, None] for h in COLUMNS[ReportType.VIRTUAL]]  # the download's header
    (table,) = failed["outputs"]
    assert (table["namespace"], table["name"]) == (namespace, f"{prefix}.avr_virtual")
    assert table.get("outputFacets", {}) == {} and "schema" not in table.get("facets", {})
    assert len(failed["run"]["facets"]["dexcare"]["reports"]) == 1
    assert "errorMessage" in failed["run"]["facets"]


def test_a_facet_that_cannot_be_built_is_logged_and_dropped(runner, admin, warehouse, tmp_path):
    """The daily DAG file, copied with one line more that breaks the column lineage the way a bug would."""
    dags = tmp_path / "dags"
    dags.mkdir()
    source = (REPO / "dags" / f"{DAG_ID}.py").read_text()
    (dags / f"{DAG_ID}.py").write_text(
        source + "\n\nimport dexcare.lineage\n\n\ndef _broken(*args, **kwargs):\n"
        "    raise RuntimeError('facet boom')\n\n\ndexcare.lineage._column_lineage = _broken\n"
    )
    events_file = tmp_path / "lineage" / "events.jsonl"
    run = runner.run("2026-11-20", env={**lineage_env(events_file), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
                     report_types=["virtual"])
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert ("OpenLineage facets of load_reports could not be built and are left out of its lineage event "
            "(RuntimeError: facet boom); the task itself is not affected.") in output
    assert admin.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(warehouse, "avr_virtual"))).fetchone()[0] == 11 * VISITS_PER_DAY
    events = read_events(events_file)
    (load,) = task_events(events, "load_reports", "COMPLETE")  # the event still goes, without our datasets
    assert not [d for d in load["inputs"] + load["outputs"] if REPORT_PATH in d["name"] or "avr_" in d["name"]]
    (download,) = task_events(events, "fetch.download_report", "COMPLETE")  # untouched by the load's failure
    assert download["inputs"][0]["name"] == f"{REPORT_PATH}/virtual"


# --- Without the provider -------------------------------------------------------------------------------------

#: What ``pip uninstall apache-airflow-providers-openlineage openlineage-python openlineage-sql
#: openlineage-integration-common`` would take away.
WITHOUT = ("openlineage", "openlineage_sql", "apache_airflow_providers_openlineage-", "openlineage_python-",
           "openlineage_sql-", "openlineage_integration_common-")


def python_without_openlineage(root: Path) -> Path:
    """A venv whose site-packages is the test venv's, linked entry by entry, minus the OpenLineage packages
    (their code, their metadata, and the provider inside the ``airflow.providers`` namespace)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    bin_dir = root / "bin"

    def mirror(src: Path, dst: Path, skip: tuple[str, ...], deeper: dict) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name in deeper:
                mirror(entry, dst / entry.name, *deeper[entry.name])
            elif not entry.name.startswith(skip):
                (dst / entry.name).symlink_to(entry)

    mirror(Path(sysconfig.get_path("purelib")),
           Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)})),
           WITHOUT, {"airflow": ((), {"providers": (("openlineage",), {})})})
    airflow = bin_dir / "airflow"
    airflow.write_text(f"#!{bin_dir / 'python'}\nimport sys\nfrom airflow.__main__ import main\nsys.exit(main())\n")
    airflow.chmod(0o755)
    return bin_dir / "python"


def test_the_package_works_without_the_openlineage_provider(admin, warehouse, sandbox, tmp_path, pg_uri):
    python = python_without_openlineage(tmp_path / "venv")
    from tests.support.helpers import dexcare_connection

    env = airflow_env(tmp_path / "home", REPO / "dags", DEXCARE_DAG_RETRIES="0",
                      AIRFLOW_CONN_DEXCARE_DEFAULT=dexcare_connection(sandbox.url),
                      AIRFLOW_CONN_DEXCARE_WAREHOUSE=postgres_connection(pg_uri),
                      PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                      **lineage_env(tmp_path / "lineage" / "events.jsonl"))
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u, dexcare.lineage, dexcare.operators.load_reports, "
         "dexcare.operators.download_report; print(u.find_spec('openlineage'), "
         "u.find_spec('airflow.providers.openlineage'))"],
        capture_output=True, text=True, timeout=120, env=env)
    assert probe.returncode == 0 and probe.stdout.splitlines()[-1] == "None None", probe.stdout + probe.stderr
    subprocess.run([str(python.parent / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=240)
    register_dags(env, str(python.parent / "airflow"))
    conf = {"schema": warehouse, "poll_interval": 1, "storage": f"{tmp_path}/csv/", "report_types": ["virtual"],
            "history": ["virtual"]}
    run = subprocess.run([str(python.parent / "airflow"), "dags", "test", DAG_ID, "2026-11-20", "--conf",
                          json.dumps(conf)], env=env, capture_output=True, text=True, timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    providers = subprocess.run([str(python.parent / "airflow"), "providers", "list", "-o", "plain"], env=env,
                               capture_output=True, text=True, timeout=120).stdout
    names = [line.split()[0] for line in providers.splitlines() if line.strip()]
    assert "airflow-provider-dexcare" in names and "apache-airflow-providers-openlineage" not in names
    assert admin.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(warehouse, "avr_virtual_history"))).fetchone()[0] == 11 * VISITS_PER_DAY
    assert not (tmp_path / "lineage" / "events.jsonl").exists()
    assert "OpenLineage facets" not in output
