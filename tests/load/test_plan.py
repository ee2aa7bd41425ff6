"""The shared plan and both dialects' statements for it, as pure functions (no database)."""

from __future__ import annotations

import datetime as dt

import pytest
from dexcare.exceptions import DexCareSchemaError
from dexcare.load.audit import AUDIT_FIELDS, audit_entry, summarise, summary_line
from dexcare.load.dialects.mssql.dialect import AUDIT_DDL as MSSQL_AUDIT_DDL
from dexcare.load.dialects.mssql.dialect import MsSqlTypes
from dexcare.load.dialects.mssql.sql import MsSqlStatements
from dexcare.load.dialects.postgres.dialect import AUDIT_DDL as POSTGRES_AUDIT_DDL
from dexcare.load.dialects.postgres.dialect import PostgresTypes
from dexcare.load.dialects.postgres.sql import PostgresStatements
from dexcare.load.plan import HISTORY_CHANGE, HISTORY_ID, LINEAGE, key_index_name, lineage_values, plan_load
from psycopg import sql

LINEAGE_VALUES = lineage_values(report_id="r", report_type="virtual", window_start=dt.date(2026, 11, 11),
                                window_end=dt.date(2026, 11, 20), loaded_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))


def plan(types=None, *, existing=None, configured=None, keys=("visit_id",), version=None,
         columns=("visit_id", "visit_status", "wait"), history=False, history_existing=None):
    return plan_load(
        schema="dexcare", table="avr_virtual", source="f.csv", headers=[c.title() for c in columns],
        columns=list(columns), keys=list(keys), version=version, configured=configured or {}, existing=existing,
        types=types or PostgresTypes(), lineage=LINEAGE_VALUES, history=history, history_existing=history_existing,
    )


def test_a_new_table_gets_the_file_columns_then_lineage() -> None:
    p = plan(configured={"wait": "integer"})
    assert p.create and p.adds == () and p.new_columns == () and p.retyped == ()
    assert p.table_columns == (("visit_id", "text"), ("visit_status", "text"), ("wait", "integer"),
                               *((c.name, PostgresTypes().lineage(c.kind)) for c in LINEAGE))
    assert p.casts == ("wait",) and p.values == ("visit_status", "wait")
    assert p.header_of("visit_status") == "Visit_Status"


def test_sql_server_keys_get_an_indexable_bounded_type_shared_across_a_composite_key() -> None:
    single = plan(MsSqlTypes())
    assert single.types == {"visit_id": "nvarchar(450)", "visit_status": "nvarchar(max)", "wait": "nvarchar(max)"}
    composite = plan(MsSqlTypes(), keys=("visit_id", "visit_status"))
    assert composite.types["visit_id"] == composite.types["visit_status"] == "nvarchar(225)"
    assert composite.casts == ()


def test_drift_adds_new_columns_and_missing_lineage_keeps_vanished_ones_and_never_retypes() -> None:
    existing = {"visit_id": "text", "visit_status": "text", "old": "text", "_dexcare_report_id": "text"}
    p = plan(existing=existing, configured={"wait": "integer", "visit_status": "date"})
    assert not p.create and p.table_columns == ()
    assert p.adds[0] == ("wait", "integer")
    assert [c for c, _ in p.adds[1:]] == [c.name for c in LINEAGE if c.name != "_dexcare_report_id"]
    assert p.new_columns == ("wait",)
    assert p.retyped == (("visit_status", "text", "date"),)
    assert p.types == {"visit_id": "text", "visit_status": "text", "wait": "integer"}  # the table's type wins
    assert p.casts == ("wait",)


def test_the_shape_is_the_table_after_the_load() -> None:
    assert plan().shape == plan().table_columns
    existing = {"visit_id": "text", "old": "text", **{c.name: "text" for c in LINEAGE}}
    assert plan(existing=existing).shape == (*existing.items(), ("visit_status", "text"), ("wait", "text"))
    assert plan().history is None


def test_a_new_history_mirrors_the_table_after_the_load_with_its_own_columns() -> None:
    for types in (PostgresTypes(), MsSqlTypes()):
        p = plan(types, history=True)
        h = p.history
        assert h.table == "avr_virtual_history" and h.create and h.adds == () and not h.baseline
        assert h.columns == tuple(c for c, _ in p.shape)
        assert h.table_columns == ((HISTORY_ID, types.identity), *p.shape, (HISTORY_CHANGE, types.lineage("text")))


def test_history_turned_on_for_an_existing_table_starts_with_a_baseline_and_follows_drift() -> None:
    existing = {"visit_id": "text", "visit_status": "text", **{c.name: "text" for c in LINEAGE}}
    assert plan(existing=existing, history=True).history.baseline
    history = {HISTORY_ID: "bigint", **existing, HISTORY_CHANGE: "text"}
    h = plan(existing=existing, history=True, history_existing=history).history
    assert not h.create and not h.baseline and h.adds == (("wait", "text"),)
    assert h.columns[-1] == "wait"


def test_a_plan_needs_a_key() -> None:
    with pytest.raises(DexCareSchemaError, match="key"):
        plan(keys=())


def test_lineage_is_listed_once_and_every_dialect_types_it() -> None:
    assert [c.param for c in LINEAGE] == list(LINEAGE_VALUES)
    for types in (PostgresTypes(), MsSqlTypes()):
        assert all(types.lineage(c.kind) for c in LINEAGE)


def test_key_index_name_is_stable_short_and_key_specific() -> None:
    name = key_index_name("avr_virtual", ["visit_id"])
    assert name == key_index_name("avr_virtual", ["visit_id"]) != key_index_name("avr_virtual", ["a", "b"])
    assert len(key_index_name("x" * 200, ["k"])) <= 63


def test_both_audit_tables_have_exactly_the_shared_fields() -> None:
    for ddl in (POSTGRES_AUDIT_DDL, MSSQL_AUDIT_DDL):
        names = [line.split()[0] for line in ddl.strip().splitlines()[1:-1]]
        assert names == ["id", *AUDIT_FIELDS]


def test_audit_entry_summary_and_its_log_line() -> None:
    started = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    entry = audit_entry(dag_id="d", run_id="r", report_id="x", report_type="virtual", table="avr_virtual",
                        uri="f.csv", sha256=None, window_start=dt.date(2026, 11, 11), window_end=dt.date(2026, 11, 20),
                        rows_in_file=10, duplicates=2, inserted=3, updated=1, new_columns=["wait"], started_at=started)
    assert set(entry) == set(AUDIT_FIELDS) and (entry["unchanged"], entry["kept_newer"]) == (4, 0)
    kept = audit_entry(**{**dict(dag_id="d", run_id="r", report_id="y", report_type="virtual", table="avr_virtual",
                                 uri="g.csv", sha256=None, window_start=dt.date(2026, 11, 1),
                                 window_end=dt.date(2026, 11, 10), rows_in_file=10, duplicates=2, inserted=3,
                                 updated=1, new_columns=["x"], started_at=started)}, kept_newer=3)
    assert (kept["unchanged"], kept["kept_newer"]) == (1, 3)  # the guard's rows are not counted as unchanged
    summary = summarise("dexcare", "d", "r", started, started, [entry, kept])
    totals = summary["tables"]["avr_virtual"]
    assert (totals["reports"], totals["rows_in_file"], totals["unchanged"], totals["kept_newer"],
            totals["new_columns"]) == (2, 20, 5, 3, ["wait", "x"])
    assert summary["reports"][0]["window_end"] == "2026-11-20"
    assert summary_line("dexcare", "avr_virtual", totals) == (
        "Loaded dexcare.avr_virtual: 2 report(s), 20 rows in file(s), 4 duplicates in file(s), 6 inserted, "
        "2 updated, 5 unchanged, 3 kept because a newer window wrote them, new columns: wait, x")


# --- PostgreSQL statements ---------------------------------------------------------------------------------


def postgres(p, **kwargs) -> PostgresStatements:
    temp = sql.Identifier
    defaults = {"stage": temp("pg_temp", "stage"), "types": p.types, "repeats": temp("pg_temp", "rep")}
    return PostgresStatements(p, **{**defaults, **kwargs})


def test_postgres_merge_writes_changed_rows_the_guard_allows_and_inserts_new_keys() -> None:
    text = postgres(plan(configured={"wait": "integer"})).merge().as_string(None)
    assert text.startswith('MERGE INTO "dexcare"."avr_virtual" t USING (SELECT "s"."visit_id" AS "visit_id"')
    assert """NULLIF("s"."wait", '')::integer AS "wait\"""" in text
    assert ' AS "wait" FROM "pg_temp"."stage" s) s ON ' in text  # the losers left the stage before
    assert 'ON t."visit_id" = s."visit_id" COLLATE "C"' in text
    assert ('WHEN MATCHED AND (t."_dexcare_window_end" IS NULL OR t."_dexcare_window_end" <= %(window_end)s) '
            'AND ROW("t"."visit_status", "t"."wait") IS DISTINCT FROM ROW("s"."visit_status", "s"."wait")') in text
    assert 'WHEN NOT MATCHED THEN INSERT ("visit_id", "visit_status", "wait", "_dexcare_report_id"' in text


def test_postgres_update_then_insert_is_one_statement_counting_both() -> None:
    text = postgres(plan()).update_then_insert().as_string(None)
    assert text.startswith("WITH src AS NOT MATERIALIZED (SELECT")
    assert "upd AS (UPDATE" in text and "ins AS (INSERT" in text and "WHERE NOT EXISTS" in text
    assert text.endswith("SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)")
    key_only = postgres(plan(columns=("visit_id",))).update_then_insert().as_string(None)
    assert "upd AS (SELECT 1 WHERE false)" in key_only


def test_postgres_history_is_appended_by_the_same_statement() -> None:
    p = plan(history=True)
    st = postgres(p)
    text = st.update_then_insert().as_string(None)
    columns = ", ".join(f'"{c}"' for c in p.history.columns)
    assert "RETURNING " + ", ".join(f'"t"."{c}"' for c in p.history.columns) + ")" in text
    assert "WHERE NOT EXISTS (SELECT FROM \"dexcare\".\"avr_virtual\" t WHERE " in text
    assert f'RETURNING {columns}), hist AS (INSERT INTO "dexcare"."avr_virtual_history" ({columns}, ' in text
    assert (f"SELECT {columns}, 'insert' FROM ins UNION ALL SELECT {columns}, 'update' FROM upd)") in text
    assert text.endswith("SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)")
    key_only = plan(columns=("visit_id",), history=True)
    text = postgres(key_only).update_then_insert().as_string(None)
    assert "'update' FROM upd" not in text and "'insert' FROM ins)" in text
    assert st.copy_to_history("baseline").as_string(None) == (
        f'INSERT INTO "dexcare"."avr_virtual_history" ({columns}, "_dexcare_change") '
        f"SELECT {columns}, 'baseline' FROM \"dexcare\".\"avr_virtual\"")


def test_postgres_dedupe_orders_by_version_then_file_order() -> None:
    p = plan(configured={"wait": "integer"}, version="wait")
    text = postgres(p).delete_losers().as_string(None)
    assert """ORDER BY NULLIF("s"."wait", '')::integer DESC NULLS LAST, s.ctid DESC""" in text
    assert text.startswith('DELETE FROM "pg_temp"."stage" WHERE ctid = ANY')


# --- SQL Server statements ---------------------------------------------------------------------------------


def mssql(p) -> MsSqlStatements:
    return MsSqlStatements(p, stage="#dexcare_stage_0", key_types={k: p.types[k] for k in p.keys})


def test_sql_server_update_is_null_safe_exact_and_guarded() -> None:
    p = plan(MsSqlTypes(), configured={"wait": "int"})
    text = mssql(p).update()
    # Value columns are staged as UTF-16 bytes (FreeTDS's bulk copy cannot trim them) and read back as text.
    assert text.startswith("UPDATE t SET t.[visit_status] = CONVERT(nvarchar(max), s.[visit_status]), "
                           "t.[wait] = CONVERT(int, CONVERT(nvarchar(max), s.[wait])), "
                           "t.[_dexcare_report_id] = %(report_id)s")
    assert "ON t.[visit_id] = s.[visit_id] COLLATE Latin1_General_100_BIN2" in text
    assert "(t.[_dexcare_window_end] IS NULL OR t.[_dexcare_window_end] <= %(window_end)s)" in text
    assert ("EXISTS (SELECT (t.[visit_status] + N'|') COLLATE Latin1_General_100_BIN2, t.[wait] "
            "EXCEPT SELECT (CONVERT(nvarchar(max), s.[visit_status]) + N'|') COLLATE Latin1_General_100_BIN2, "
            "CONVERT(int, CONVERT(nvarchar(max), s.[wait])))") in text
    assert mssql(plan(MsSqlTypes(), columns=("visit_id",))).update() is None


def test_sql_server_insert_takes_only_new_keys_and_dedupe_ranks_only_repeated_keys() -> None:
    p = plan(MsSqlTypes(), configured={"wait": "datetimeoffset(7)"}, version="wait")
    st = mssql(p)
    new_keys = "WHERE NOT EXISTS (SELECT 1 FROM [dexcare].[avr_virtual] AS t WHERE t.[visit_id] = s.[visit_id]"
    assert new_keys in st.insert()
    dedupe = st.dedupe()
    version = "CONVERT(datetimeoffset(7), CONVERT(nvarchar(max), s.[wait]))"
    assert f"ORDER BY {version} DESC, s.[_dexcare_line] DESC" in dedupe
    assert "GROUP BY d.[visit_id] HAVING COUNT_BIG(*) > 1" in dedupe
    assert dedupe.endswith("DELETE FROM ranked WHERE rn > 1")
    assert "TRY_CONVERT(datetimeoffset(7), CONVERT(nvarchar(max), s.[wait]))" in st.first_bad_casts()
    assert st.create_stage() == (
        "CREATE TABLE [#dexcare_stage_0] ([visit_id] nvarchar(450) COLLATE Latin1_General_100_BIN2 NOT NULL, "
        "[visit_status] varbinary(max) NULL, [wait] varbinary(max) NULL, [_dexcare_line] int NOT NULL)")


# --- Repeats: typed keys, and how the version orders them (issue 18, items 14 and 16) -----------------------


@pytest.mark.parametrize("types", [PostgresTypes(), MsSqlTypes()], ids=["postgres", "mssql"])
def test_an_undeclared_text_version_is_ordered_as_an_instant_a_declared_one_by_its_type(types) -> None:
    text = types.text
    assert plan(types, version="wait").version_instant
    assert not plan(types).version_instant
    assert not plan(types, version="wait", configured={"wait": text}).version_instant  # declared text: as text
    assert not plan(types, version="wait", configured={"wait": "date"}).version_instant
    # A table whose version column is typed already orders by that type; one still text by the instant, even
    # when a type is configured now (types never change: the values stay text).
    existing = {"visit_id": text, "visit_status": text, "wait": "date"}
    assert not plan(types, version="wait", existing=existing).version_instant
    existing["wait"] = text
    assert plan(types, version="wait", existing=existing, configured={"wait": "date"}).version_instant


def test_postgres_repeats_are_found_on_the_typed_key_and_ordered_by_the_instant() -> None:
    p = plan(configured={"visit_id": "integer"}, version="visit_status")
    st = postgres(p)
    key = """NULLIF("visit_id", '')::integer"""
    assert st.find_repeats().as_string(None) == (
        'CREATE TEMP TABLE "pg_temp"."rep" ON COMMIT DROP AS SELECT tid, empty FROM (SELECT tid, empty, count(*) '
        'OVER (PARTITION BY "_k0") AS n FROM (SELECT ctid AS tid, '
        f'{key} AS "_k0", {key} IS NULL AS empty FROM "pg_temp"."stage") s) x WHERE n > 1 OR empty')
    losers = st.delete_losers().as_string(None)
    skey = """NULLIF("s"."visit_id", '')::integer"""
    assert (f"PARTITION BY {skey} ORDER BY NULLIF(\"s\".\"visit_status\", '')::timestamp with time zone DESC "
            "NULLS LAST, s.ctid DESC") in losers
    assert 'WHERE s.ctid = ANY (ARRAY(SELECT tid FROM "pg_temp"."rep"))' in losers
    check = st.first_bad_version().as_string(None)
    assert check.startswith("""SELECT ctid FROM "pg_temp"."stage" WHERE "visit_status" <> '' AND (NOT (translate("""
                            """"visit_status", '123456789', '000000000') = ANY ('{0000-00-00T00:00:00Z,""")
    assert check.endswith(""""visit_status"::timestamp with time zone IS NULL) ORDER BY ctid LIMIT 1""")


def test_sql_server_repeats_are_ranked_by_the_converted_key_and_the_instant() -> None:
    p = plan(MsSqlTypes(), configured={"visit_id": "int"}, version="visit_status")
    dedupe = mssql(p).dedupe()
    version = "CONVERT(nvarchar(max), s.[visit_status])"
    instant = (f"CONVERT(datetimeoffset(7), STUFF(CASE WHEN RIGHT({version}, 5) LIKE N'[+-][0-9][0-9][0-9][0-9]' "
               f"THEN STUFF({version}, LEN({version}) - 1, 0, N':') ELSE {version} END, 11, 1, N'T'))")
    assert (f"ROW_NUMBER() OVER (PARTITION BY CONVERT(int, s.[visit_id]) ORDER BY {instant} DESC, "
            "s.[_dexcare_line] DESC)") in dedupe
    assert ("(SELECT CONVERT(int, d.[visit_id]) AS [visit_id] FROM [#dexcare_stage_0] AS d "
            "GROUP BY CONVERT(int, d.[visit_id]) HAVING COUNT_BIG(*) > 1) AS dup "
            "WHERE dup.[visit_id] = CONVERT(int, s.[visit_id])") in dedupe
