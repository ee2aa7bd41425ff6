"""SQL Server's block parser against the ``csv`` module it stands in for: the same batches, the same errors.

:func:`dexcare.load.dialects.mssql.staging.batches` splits well-formed blocks in C (:mod:`.blocks`) and hands
anything else to the ``csv`` module. The reference here is the parse it replaced: :func:`records` (the
``csv`` module) with each record checked and converted alone. Both run on generated files with every
awkward thing a report may hold, and on hostile ones, at block sizes that cut records, quotes and characters.
"""

from __future__ import annotations

import datetime as dt
import gc
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dexcare.exceptions import DexCareError
from dexcare.load.csv_stream import open_report, read_header
from dexcare.load.dialects.mssql import blocks
from dexcare.load.dialects.mssql.dialect import MsSqlTypes, statements_for
from dexcare.load.dialects.mssql.staging import _Rows, batches
from dexcare.load.identifiers import normalize_headers
from dexcare.load.plan import lineage_values, plan_load
from dexcare.load.records import records

HEADER = ["visitId", "createdAt", "notes", "code", "updatedAt"]
#: Values to draw from: plain, empty, quoted for a comma, quote or line break (LF and CRLF), characters whose
#: UTF-16LE bytes hold a separator's at an odd offset (U+1Fxx then U+xx00), U+2Cxx, outside the BMP.
PLAIN = ["a", "Zoë", "x y", "2026-11-20T10:00:00Z", "2026-11-20 10:00:00+0100", "12", "\u1f00\u0100",
         "\u1f1e\u0100", "\u2c00\u0100", "\u2c1f", "😀", "a😀b", "\u0a00\u0100", "\u1e00\u0100"]
QUOTED = ['"a,b"', '"say ""hi"""', '""', '""""', '"line\none"', '"line\r\ntwo"', '"\n"', '",\n,"', '"😀,"',
          '"\u1f00\u0100,"', '"x""\n""y"']
#: Each breaks one record in a way the csv module names (or that the block parser must not take).
HOSTILE = ['a"b', '"a"b', '"open', 'x\ry', '"bare\rcr"', "\x1f", "\x1e", "\x1d", "\x00", " ", "tail ", "",
           "\ufeff", '"a" ', ' "a"', "\r"]


#: What the block parser takes itself: no character that could fake a separator.
FAKES = ("\u1f00", "\u1f1e")


def field(rng: random.Random, hostile: float, fakes: bool) -> str:
    roll = rng.random()
    if roll < hostile:
        return rng.choice(HOSTILE)
    if roll < 0.3:
        return ""
    value = rng.choice(QUOTED) if roll < 0.6 else rng.choice(PLAIN)
    return value if fakes or not any(fake in value for fake in FAKES) else "b"


def generated(rng: random.Random, rows: int, hostile: float, *, fakes: bool = True) -> bytes:
    eol = rng.choice(["\n", "\r\n", None])
    lines = [",".join(HEADER)]
    for number in range(rows):
        values = [f"v{number}" if rng.random() > hostile else rng.choice(["", "v ", f"v{number}😀", "\u1f00"])]
        values += [field(rng, hostile, fakes) for _ in HEADER[1:]]
        if rng.random() < hostile:  # ragged
            values = values[:-1] if rng.random() < 0.5 else [*values, "x"]
        if rng.random() < hostile / 4:
            values = []  # a blank line
        lines.append(",".join(values))
    ends = [eol or rng.choice(["\n", "\r\n"]) for _ in lines]
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    data = text.encode("utf-8")
    if rng.random() < 0.3:
        data = data.removesuffix(b"\n").removesuffix(b"\r")  # no line end after the last record
    if rng.random() < hostile:
        at = rng.randrange(len(lines[0]) + 1, len(data))
        data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"]) + data[at:]
    return data


def statements(path: Path, configured: dict[str, str], version: str | None) -> tuple[Any, Any]:
    with path.open("rb") as stream:
        header = read_header(stream, source=str(path))
    columns = normalize_headers(header.fields, source=str(path))
    plan = plan_load(schema="dexcare", table="avr", source=str(path), headers=header.fields, columns=columns,
                     keys=["visit_id"], version=version, configured=configured, existing=None, types=MsSqlTypes(),
                     lineage=lineage_values(report_id="x", report_type="virtual", window_start=dt.date(2026, 11, 20),
                                            window_end=dt.date(2026, 11, 20), loaded_at=dt.datetime.now(dt.UTC)))
    return statements_for(plan, 0), header


def reference(st: Any, path: Path, block_size: int, batch_rows: int) -> Iterator[list[list[Any]]]:
    """The parse before the block parser: the csv module, a record at a time."""
    rows = _Rows(st)
    with path.open("rb") as stream:
        header = read_header(stream, source=str(path))
        batch: list[list[Any]] = []
        for line, record in records(header, stream, source=str(path), columns=rows.width, opener=open_report,
                                    block_size=block_size):
            batch.append(rows.row(line, record))
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch


def current(st: Any, path: Path, block_size: int, batch_rows: int) -> Iterator[list[list[Any]]]:
    with path.open("rb") as stream:
        header = read_header(stream, source=str(path))
        yield from batches(st, header, stream, opener=open_report, block_size=block_size, batch_rows=batch_rows)


def outcome(made: Iterator[list[list[Any]]]) -> tuple[list[list[list[Any]]], str | None]:
    out: list[list[list[Any]]] = []
    try:
        for batch in made:
            out.append([list(row) for row in batch])
    except DexCareError as exc:
        return out, f"{type(exc).__name__}: {exc}"
    return out, None


CONFIGS = [
    ({}, None),
    ({"visit_id": "nvarchar(6)", "code": "nvarchar(3)", "created_at": "datetimeoffset(7)",
      "updated_at": "datetime2(3)"}, None),
    ({}, "updated_at"),
]


@pytest.mark.parametrize("seed", range(46))
def test_the_block_parser_gives_what_the_csv_module_gave(tmp_path, seed) -> None:
    rng = random.Random(seed)
    hostile = 0.0 if seed % 3 == 0 else rng.choice([0.002, 0.01, 0.05])
    rows = rng.choice([1, 5, 40, 300])
    configured, version = CONFIGS[seed % len(CONFIGS)]
    if seed >= 40:  # larger than the header's first read and a block (64 KiB): records from the stream too
        hostile, rows, (configured, version) = (0.0, 0.0003)[seed % 2], 10_000, CONFIGS[0]
    path = tmp_path / "report.csv"
    path.write_bytes(generated(rng, rows, hostile, fakes=seed < 40 or seed % 4 == 2))
    try:
        st, _ = statements(path, configured, version)
    except DexCareError:
        return  # a header the load refuses before any record is read
    for block_size in (1, 7, 64, 1000, 1 << 20) if seed < 40 else (7, 1 << 20):
        batch_rows = rng.choice([1, 3, 50])
        expected = outcome(reference(st, path, block_size, batch_rows))
        assert outcome(current(st, path, block_size, batch_rows)) == expected, (seed, block_size)


def test_clean_blocks_are_split_without_the_csv_module(tmp_path, monkeypatch) -> None:
    """The generated files above mostly go the fast way; this one must go it all the way (else the test
    above could pass with the csv module doing every block)."""
    rng = random.Random(1)
    path = tmp_path / "clean.csv"
    path.write_bytes(generated(rng, 300, 0.0, fakes=False))
    st, _ = statements(path, {}, None)
    taken: list[int] = []
    split = blocks.split_block

    def spy(block: bytes, **kwargs: Any) -> Any:
        made = split(block, **kwargs)
        taken.append(isinstance(made, blocks.Block))
        return made

    monkeypatch.setattr("dexcare.load.dialects.mssql.staging.split_block", spy)
    monkeypatch.setattr("dexcare.load.dialects.mssql.staging.records_from", None)  # never called
    assert outcome(current(st, path, 1000, 7)) == outcome(reference(st, path, 1000, 7))
    assert taken and all(taken)


def test_after_a_block_the_csv_module_reads_the_next_ones_are_split_again(tmp_path, monkeypatch) -> None:
    """A character that could fake a separator, or a bare CR in a quoted field, costs its block, not the file."""
    path = tmp_path / "report.csv"
    rows = [f'v{n},{"a" * 50},"b,\n",c,d\r\n' for n in range(6000)]  # 400 kB: blocks of 64 kB
    rows[1000] = 'v1000,\u1f00\u0100,"b\rc",c,d\r\n'
    rows[2000] = 'v2000,a,"b\rc",c,d\r\n'
    path.write_bytes(f"{','.join(HEADER)}\r\n{''.join(rows)}".encode())
    st, _ = statements(path, {}, None)
    taken: list[Any] = []
    split = blocks.split_block

    def spy(block: bytes, **kwargs: Any) -> Any:
        made = split(block, **kwargs)
        taken.append(made if isinstance(made, blocks.Refusal) else "split")
        return made

    monkeypatch.setattr("dexcare.load.dialects.mssql.staging.split_block", spy)
    assert outcome(current(st, path, 1 << 20, 100)) == outcome(reference(st, path, 1 << 20, 100))
    assert taken.count(blocks.Refusal.BLOCK) == 2 and blocks.Refusal.REST not in taken
    assert taken.count("split") >= 2


@pytest.mark.parametrize("text", ["\u1f00\u0100", "\u1f1e\u2c00", "x\u1f1f\u0100y"])
def test_a_separator_faked_across_two_characters_is_refused(text) -> None:
    """U+1Fxx then U+xx00: their UTF-16LE bytes hold the separator's at an odd offset."""
    assert blocks.split_block(f"k,{text},z\r\n".encode(), width=3, first_line=2) is blocks.Refusal.BLOCK
    assert isinstance(blocks.split_block("k,\u1f00 \u0100,z\r\n".encode(), width=3, first_line=2), blocks.Block)


def test_cut_ends_the_block_after_the_last_record_outside_quotes() -> None:
    assert blocks.cut(b'a,"b\nc"\nd,"e\n') == len(b'a,"b\nc"\n')
    assert blocks.cut(b'a,"b\nc') == 0
    assert blocks.cut(b"no line end") == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was_found(tmp_path, enabled) -> None:
    """Paused while a batch is made, running while the caller holds one, and as it was after a failure."""
    path = tmp_path / "report.csv"
    rows = "".join(f'v{n},a,"b,\n",c,d\r\n' for n in range(40))
    path.write_bytes(f"{','.join(HEADER)}\r\n{rows}v,too,few\r\n".encode())
    st, _ = statements(path, {}, None)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        seen = []
        with pytest.raises(DexCareError, match="fewer fields"):
            for _batch in current(st, path, 1000, 7):
                seen.append(gc.isenabled())
        assert seen and set(seen) == {enabled}
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
