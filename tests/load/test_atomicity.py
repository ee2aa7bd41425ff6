"""All or nothing: an injected failure, a warehouse that goes away, and two loads at once."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import psycopg
import pytest
from dexcare.exceptions import DexCareCSVError, DexCareWarehouseError
from dexcare.load.csv_stream import open_report
from dexcare.load.loader import LoadOptions, load_reports

from tests.load.conftest import END, report, rows, snapshot

VIRTUAL = "visitId,visitStatus\r\n"
RETAIL = "Visit ID,Status\r\n"


def test_failure_after_the_first_table_leaves_every_table_untouched(load, write_csv, admin, schema) -> None:
    load(report(write_csv(VIRTUAL + "v1,scheduled\r\n")), report(write_csv(RETAIL + "r1,open\r\n"), "retail"))
    before = snapshot(admin, schema)
    good_virtual = write_csv(VIRTUAL + "v1,completed\r\nv2,scheduled\r\n")  # merged first, then rolled back
    bad_retail = write_csv(RETAIL + "r1,closed\r\nr2,open,EXTRA\r\n")
    with pytest.raises(DexCareCSVError, match="line 3"):
        load(report(good_virtual, end=END), report(bad_retail, "retail", end=END))
    assert snapshot(admin, schema) == before  # data, audit rows and physical row versions


def test_failure_on_a_first_run_creates_nothing(load, write_csv, admin, schema) -> None:
    with pytest.raises(DexCareCSVError):
        load(report(write_csv(VIRTUAL + "v1,a\r\n")), report(write_csv(RETAIL + '"r1,open\r\n'), "retail"))
    assert admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [schema]).fetchone() == (0,)
    # No staging table survives either (they are temp tables dropped with the transaction).
    assert admin.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_dexcare\\_stage%'").fetchone() == (0,)


class _SlowStream(io.RawIOBase):
    """Hands the file over in small pieces, slowly, and can hold the COPY open until told to go on."""

    def __init__(self, path: Path, *, started: threading.Event, gate: threading.Event | None = None) -> None:
        self._raw = path.open("rb")
        self._started = started
        self._gate = gate
        self._reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 3:  # the header is read; the COPY has begun
            self._started.set()
            if self._gate is not None and not self._gate.wait(30):
                raise TimeoutError("test gate never opened")
        time.sleep(0.005)
        return self._raw.read(min(size, 4096) if size > 0 else 4096)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _big_csv(write_csv, prefix: str, status: str, n: int = 3000) -> Path:
    return write_csv(VIRTUAL + "".join(f"{prefix}{i},{status}\r\n" for i in range(n)))


def _wait_for(admin: psycopg.Connection, sql: str, params: list, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin.execute(sql, params).fetchone()[0]:
            return
        time.sleep(0.02)
    raise AssertionError(f"condition never met: {sql}")


def test_warehouse_going_away_mid_copy(pg_uri, load, write_csv, admin, schema) -> None:
    load(report(write_csv(VIRTUAL + "v1,scheduled\r\n")))
    before = snapshot(admin, schema)
    path = _big_csv(write_csv, "v", "completed")
    started = threading.Event()
    with psycopg.connect(pg_uri) as conn:
        pid = conn.info.backend_pid

        def killer() -> None:
            started.wait(20)
            _wait_for(admin, "SELECT EXISTS (SELECT FROM pg_stat_progress_copy WHERE pid = %s)", [pid])
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            with pytest.raises(DexCareWarehouseError) as err:
                load_reports(conn, [report(path, end=END)], options=LoadOptions(schema=schema),
                             opener=lambda uri: _SlowStream(Path(uri), started=started))
        finally:
            thread.join()
    message = str(err.value)
    assert "Lost the warehouse connection" in message and str(path) in message
    assert "nothing was written" in message
    assert err.value.retryable
    assert snapshot(admin, schema) == before


def test_two_concurrent_loads_are_serialised(pg_uri, write_csv, admin, schema) -> None:
    first = _big_csv(write_csv, "v", "scheduled", 500)
    second = _big_csv(write_csv, "v", "completed", 800)
    started, gate = threading.Event(), threading.Event()
    results: dict[str, object] = {}
    pids: dict[str, int] = {}

    def run(name: str, path: Path, end, opener) -> None:
        try:
            with psycopg.connect(pg_uri) as conn:
                pids[name] = conn.info.backend_pid
                results[name] = load_reports(conn, [report(path, end=end)], options=LoadOptions(schema=schema),
                                             run_id=name, opener=opener)
        except Exception as exc:  # reported below
            results[name] = exc

    a = threading.Thread(target=run, args=(
        "a", first, END, lambda uri: _SlowStream(Path(uri), started=started, gate=gate)))
    a.start()
    assert started.wait(20)  # A holds the advisory lock and sits in its COPY
    b = threading.Thread(target=run, args=("b", second, END, open_report))
    b.start()
    deadline = time.monotonic() + 20
    while "b" not in pids and time.monotonic() < deadline:
        time.sleep(0.01)
    _wait_for(admin, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s AND wait_event = 'advisory')",
              [pids["b"]])
    assert "b" not in results  # B is queued behind A's lock, not interleaving
    gate.set()
    a.join(30)
    b.join(30)
    assert not isinstance(results["a"], Exception), results["a"]
    assert not isinstance(results["b"], Exception), results["b"]
    data = rows(admin, schema, "avr_virtual")
    assert len(data) == 800
    assert {r["visit_status"] for r in data} == {"completed"}
    audit = admin.execute(f'SELECT run_id, inserted, updated FROM "{schema}".load_audit ORDER BY id').fetchall()
    assert audit == [("a", 500, 0), ("b", 300, 500)]
