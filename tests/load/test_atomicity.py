"""All or nothing, on every warehouse: an injected failure, a warehouse that goes away, two loads at once."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dexcare.exceptions import DexCareCSVError, DexCareWarehouseError
from dexcare.load.csv_stream import open_report
from dexcare.load.loader import LoadOptions, load_reports

from tests.load.conftest import END, report

VIRTUAL = "visitId,visitStatus\r\n"
RETAIL = "Visit ID,Status\r\n"


def test_failure_after_the_first_table_leaves_every_table_untouched(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(VIRTUAL + "v1,scheduled\r\n")), report(write_csv(RETAIL + "r1,open\r\n"), "retail"))
    warehouse.watch_rewrites(schema, "avr_virtual")
    before = warehouse.snapshot(schema)
    good_virtual = write_csv(VIRTUAL + "v1,completed\r\nv2,scheduled\r\n")  # merged first, then rolled back
    bad_retail = write_csv(RETAIL + "r1,closed\r\nr2,open,EXTRA\r\n")
    with pytest.raises(DexCareCSVError, match="line 3"):
        load(report(good_virtual, end=END), report(bad_retail, "retail", end=END))
    assert warehouse.snapshot(schema) == before  # data, audit rows and row versions


def test_failure_on_a_first_run_creates_nothing(load, write_csv, warehouse, schema) -> None:
    with pytest.raises(DexCareCSVError):
        load(report(write_csv(VIRTUAL + "v1,a\r\n")), report(write_csv(RETAIL + '"r1,open\r\n'), "retail"))
    assert warehouse.tables(schema) == []


class _SlowStream(io.RawIOBase):
    """Hands the file over in small pieces, and can hold the load mid-file until told to go on."""

    def __init__(self, path: Path, *, started: threading.Event, gate: threading.Event | None = None) -> None:
        self._raw = path.open("rb")
        self._started = started
        self._gate = gate
        self._reads = 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 3:  # the header is read; the data is streaming
            self._started.set()
            if self._gate is not None and not self._gate.wait(30):
                raise TimeoutError("test gate never opened")
        time.sleep(0.005)
        return self._raw.read(min(size, 4096) if size > 0 else 4096)

    def readinto(self, buffer) -> int:  # the SQL Server path reads through io.BufferedReader
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()


def _big_csv(write_csv, prefix: str, status: str, n: int = 3000) -> Path:
    return write_csv(VIRTUAL + "".join(f"{prefix}{i},{status}\r\n" for i in range(n)))


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def test_warehouse_going_away_mid_load(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(VIRTUAL + "v1,scheduled\r\n")))
    before = warehouse.snapshot(schema)
    path = _big_csv(write_csv, "v", "completed")
    started, gate = threading.Event(), threading.Event()
    conn = warehouse.connect()
    session = warehouse.session_id(conn)

    def killer() -> None:
        try:
            started.wait(20)
            _wait_for(lambda: warehouse.holds_load_lock(session), "the load holds its lock")
            warehouse.kill(session)
        finally:
            gate.set()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(DexCareWarehouseError) as err:
            load_reports(conn, [report(path, end=END)], dialect=warehouse.name, options=LoadOptions(schema=schema),
                         opener=lambda uri: _SlowStream(Path(uri), started=started, gate=gate))
    finally:
        thread.join()
        with contextlib.suppress(Exception):  # the session was killed; closing it may fail, and that is fine
            conn.close()
    message = str(err.value)
    assert "lost the warehouse connection" in message.lower() and str(path) in message
    assert "nothing was written" in message
    assert err.value.retryable
    assert warehouse.snapshot(schema) == before


def test_two_concurrent_loads_are_serialised(write_csv, warehouse, schema) -> None:
    first = _big_csv(write_csv, "v", "scheduled", 500)
    second = _big_csv(write_csv, "v", "completed", 800)
    started, gate = threading.Event(), threading.Event()
    results: dict[str, object] = {}
    sessions: dict[str, int] = {}

    def run(name: str, path: Path, opener) -> None:
        try:
            conn = warehouse.connect()
            try:
                sessions[name] = warehouse.session_id(conn)
                results[name] = load_reports(conn, [report(path, end=END)], dialect=warehouse.name,
                                             options=LoadOptions(schema=schema), run_id=name, opener=opener)
            finally:
                conn.close()
        except Exception as exc:  # reported below
            results[name] = exc

    a = threading.Thread(target=run, args=("a", first, lambda uri: _SlowStream(Path(uri), started=started, gate=gate)))
    a.start()
    try:
        assert started.wait(20)  # A holds the lock and sits in the middle of its file
        _wait_for(lambda: "a" in sessions and warehouse.holds_load_lock(sessions["a"]), "A holds its lock")
        b = threading.Thread(target=run, args=("b", second, open_report))
        b.start()
        _wait_for(lambda: "b" in sessions and warehouse.waits_for_load_lock(sessions["b"]), "B waits for A's lock")
        assert "b" not in results  # B is queued behind A's lock, not interleaving
    finally:
        gate.set()
    a.join(60)
    b.join(60)
    assert not isinstance(results["a"], Exception), results["a"]
    assert not isinstance(results["b"], Exception), results["b"]
    data = warehouse.rows(schema, "avr_virtual")
    assert len(data) == 800
    assert {r["visit_status"] for r in data} == {"completed"}
    audit = [(r["run_id"], r["inserted"], r["updated"]) for r in warehouse.audit(schema)]
    assert audit == [("a", 500, 0), ("b", 300, 500)]
